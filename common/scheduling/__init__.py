"""Placement (which agent runs a task) and the leader-elected scheduler (introduced in stage 2)."""
