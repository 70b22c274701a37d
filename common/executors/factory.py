"""ExecutorFactory: task type -> executor.

Pattern: Factory (introduced in stage 1). The agent asks for "an executor for this task" and
never names a class; adding a task type is one `register` call. An unknown type is rejected at
validation, long before it reaches here.
"""

from __future__ import annotations

from collections.abc import Callable

from common.domain.task import TaskType
from common.executors.base import ExecutorLimits, TaskExecutor
from common.executors.python_script import PythonScriptExecutor
from common.executors.shell import ShellTaskExecutor


class ExecutorFactory:
    def __init__(self, limits: ExecutorLimits | None = None) -> None:
        self.limits = limits or ExecutorLimits()
        self._makers: dict[TaskType, Callable[[ExecutorLimits], TaskExecutor]] = {}
        self._cache: dict[TaskType, TaskExecutor] = {}

    def register(self, task_type: TaskType, maker: Callable[[ExecutorLimits], TaskExecutor]):
        self._makers[task_type] = maker
        self._cache.pop(task_type, None)
        return self

    def supported(self) -> list[TaskType]:
        return sorted(self._makers, key=lambda t: t.value)

    def create(self, task_type: TaskType) -> TaskExecutor:
        # Executors are stateless, so one instance per type is built once and reused.
        if task_type not in self._cache:
            try:
                maker = self._makers[task_type]
            except KeyError:
                raise ValueError(f"no executor registered for {task_type}") from None
            self._cache[task_type] = maker(self.limits)
        return self._cache[task_type]

    def warm(self, parallel: int = 1) -> None:
        """Do per-executor set-up now, at start-up, rather than inside the first task."""
        for task_type in self.supported():
            executor = self.create(task_type)
            warm = getattr(executor, "warm", None)
            if warm is not None:
                warm(parallel)

    def close(self) -> None:
        for executor in self._cache.values():
            executor.close()
        self._cache.clear()


def default_factory(limits: ExecutorLimits | None = None) -> ExecutorFactory:
    return (
        ExecutorFactory(limits)
        .register(TaskType.SHELL, ShellTaskExecutor)
        .register(TaskType.PYTHON_SCRIPT, PythonScriptExecutor)
    )
