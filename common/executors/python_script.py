"""Runs a PYTHON_SCRIPT task's payload as Python source in a child process of its own.

The child is forked from a warm zygote (see zygote.py): the same isolation, capture and
process-group kill as a fresh `python -I -c SOURCE`, for about a thirtieth of the start-up
cost. If no zygote can be had, the task runs in a fresh interpreter as before.
"""

from __future__ import annotations

import subprocess
import sys

from common.domain.task import Task, TaskType
from common.executors.base import ExecutorLimits, TaskExecutor
from common.executors.process import Child, Spawner
from common.executors.zygote import ZygoteError, ZygotePool
from common.observability import get_logger

log = get_logger("tasklab.executor")


class PythonScriptExecutor(TaskExecutor):
    task_type = TaskType.PYTHON_SCRIPT

    def __init__(self, limits: ExecutorLimits | None = None, warm_fork: bool = True) -> None:
        super().__init__(limits)
        self.pool = ZygotePool() if warm_fork else None

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
        # so a task cannot be steered by the agent's environment. The zygote runs with -I too.
        return [sys.executable, "-I", "-c", task.payload]

    def spawner(self, task: Task, argv: list[str]) -> Spawner | None:
        pool = self.pool
        if pool is None:
            return None

        def spawn() -> Child:
            try:
                # "<string>" is what `python -c` names the source in a traceback.
                return pool.run(task.payload, "<string>")
            except (ZygoteError, OSError) as exc:
                log.warning("warm fork unavailable (%s); starting a fresh interpreter", exc)
                return subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                    close_fds=True,
                )

        return spawn

    def warm(self, count: int = 1) -> None:
        if self.pool is not None:
            self.pool.warm(count)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
