"""Runs a SHELL task's payload with /bin/sh -c, in its own process group."""

from __future__ import annotations

from common.domain.task import Task, TaskType
from common.executors.base import TaskExecutor


class ShellTaskExecutor(TaskExecutor):
    task_type = TaskType.SHELL
    shell = "/bin/sh"

    def prepare(self, task: Task) -> list[str]:
        return [self.shell, "-c", task.payload]
