"""Stage 1: a Redis list queue and agents that run tasks from it."""
