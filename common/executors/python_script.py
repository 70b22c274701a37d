"""Runs a PYTHON_SCRIPT task's payload as Python source in a fresh, isolated interpreter."""

from __future__ import annotations

import sys

from common.domain.task import Task, TaskType
from common.executors.base import TaskExecutor


class PythonScriptExecutor(TaskExecutor):
    task_type = TaskType.PYTHON_SCRIPT

    def validate(self, task: Task) -> str | None:
        problem = super().validate(task)
        if problem:
            return problem
        # Reject a syntax error here, with its line, rather than paying for a process to say so.
        try:
            compile(task.payload, f"<task {task.task_id}>", "exec")
        except SyntaxError as exc:
            return f"syntax error in payload line {exc.lineno}: {exc.msg}"
        return None

    def prepare(self, task: Task) -> list[str]:
        # -I: isolated mode (no user site-packages, no PYTHON* env vars, script dir not on path),
        # so a task cannot be steered by the agent's environment.
        return [sys.executable, "-I", "-c", task.payload]
