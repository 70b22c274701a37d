"""Tasks as tests build them, without a store."""

from __future__ import annotations

from common.domain.task import Task, TaskSpec, TaskType


def script_task(payload: str, timeout: int = 20) -> Task:
    """A PYTHON_SCRIPT task running `payload`, with an execution timeout of `timeout` s."""
    spec = TaskSpec(task_type=TaskType.PYTHON_SCRIPT, payload=payload, execution_timeout=timeout)
    return Task.new(spec)
