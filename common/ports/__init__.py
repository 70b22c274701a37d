"""Ports: the abstract interfaces the platform is written against (hexagonal style)."""

from common.ports.task_store import TaskStore, TransitionResult

__all__ = ["TaskStore", "TransitionResult"]
