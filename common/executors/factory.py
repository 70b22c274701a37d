"""ExecutorFactory: task type -> executor.

Pattern: Factory (introduced in stage 1). The agent asks for "an executor for this task" and
never names a class; adding a task type is one `register` call. An unknown type is rejected at
validation, long before it reaches here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from common.domain.task import TaskType
from common.executors.base import ExecutorLimits, TaskExecutor
from common.executors.handler import HandlerExecutor, handler_modules
from common.executors.python_script import PythonScriptExecutor
from common.executors.shell import ShellTaskExecutor
from common.executors.zygote import ZygotePool

# Called as maker(limits, pool=..., warm_fork=...): a TaskExecutor subclass is one.
Maker = Callable[..., TaskExecutor]


class ExecutorFactory:
    def __init__(
        self,
        limits: ExecutorLimits | None = None,
        warm_fork: bool = True,
        preload: tuple[str, ...] = (),
    ) -> None:
        self.limits = limits or ExecutorLimits()
        # One pool of warm zygotes for every type: a zygote can run a script, exec a shell or
        # call a handler, so an agent keeps `capacity` of them, not `capacity` per task type.
        # Each imports the handlers' modules (`preload`) once, at its start.
        self.pool = ZygotePool(preload=preload) if warm_fork else None
        self._makers: dict[TaskType, Maker] = {}
        self._cache: dict[TaskType, TaskExecutor] = {}

    def register(self, task_type: TaskType, maker: Maker):
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
            self._cache[task_type] = maker(
                self.limits, pool=self.pool, warm_fork=self.pool is not None
            )
        return self._cache[task_type]

    def warm(self, parallel: int = 1) -> None:
        """Do per-executor set-up now, at start-up, rather than inside the first task."""
        for task_type in self.supported():
            # HANDLER sorts first: its warm workers take their zygotes before the pool fills.
            self.create(task_type).warm(parallel)
        if self.pool is not None:
            self.pool.warm(parallel)

    def close(self) -> None:
        for executor in self._cache.values():
            executor.close()
        self._cache.clear()
        if self.pool is not None:
            self.pool.close()


def default_factory(
    limits: ExecutorLimits | None = None,
    warm_fork: bool = True,
    handlers: tuple[str, ...] = (),
    handler_mode: str = "warm",
    handler_max_calls: int = 1000,
) -> ExecutorFactory:
    """SHELL and PYTHON_SCRIPT; HANDLER too when the agent has `handlers` (module:function) to
    call, and only then: an agent advertises the types it can run (stage 2 on, the scheduler
    places a HANDLER task only on an agent that has handlers), and a HANDLER task naming a
    function it lacks fails with the list of those it has. `handler_mode`: "warm" (calls run
    in warm workers, recycled after `handler_max_calls`) or "fork" (a child per call); see
    handler.py."""
    factory = (
        ExecutorFactory(limits, warm_fork, preload=handler_modules(handlers))
        .register(TaskType.SHELL, ShellTaskExecutor)
        .register(TaskType.PYTHON_SCRIPT, PythonScriptExecutor)
    )
    if handlers:
        factory.register(
            TaskType.HANDLER,
            partial(
                HandlerExecutor,
                handlers=tuple(handlers),
                mode=handler_mode,
                max_calls=handler_max_calls,
            ),
        )
    return factory
