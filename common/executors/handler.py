"""Runs a HANDLER task: a call of a Python function registered with the agent.

The function runs in a child forked for the task from a warm zygote (zygote_server.py), never
in the agent: every zygote imported the registered handlers' modules once at its start, so a
call costs a fork, not an interpreter start or an import. The child is the same as a
PYTHON_SCRIPT task's (its own session, the agent's pipes, the group kill on a timeout or a
cancel, the subreaper's sweep), so `run_process` keeps the deadline, the cancel and the capped
capture, and a killed call takes only its own child: the zygote serves the next task. The
function's return value, as JSON, is the task's result; what it prints is the task's log.

Why a zygote fork rather than a pool of long-lived workers calling handler after handler:
killing a worker on a timeout would need the replace, the process-group and the orphan sweep
written again, and a handler that leaks state (a global, a thread, a file) would leak it into
the next task. A fork per call keeps every guarantee the other types have, for ~1 ms.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

from common.domain.task import HANDLER_NAME, Task, TaskType, handler_call
from common.executors.base import ExecutorLimits, TaskExecutor, task_environment
from common.executors.process import Child, LineListener, ProcessOutcome
from common.executors.zygote import SERVER, ZygotePool


class HandlerRegistrationError(ValueError):
    """A registered handler that is not `module:function` or cannot be imported (one line)."""


def handler_modules(handlers: tuple[str, ...]) -> tuple[str, ...]:
    """The modules the zygotes preload for `handlers`, each once, in order."""
    return tuple(dict.fromkeys(h.partition(":")[0] for h in handlers))


def check_handlers(handlers: tuple[str, ...], timeout: float = 60.0) -> None:
    """Raise HandlerRegistrationError unless every handler imports and is callable.

    Checked in an interpreter of its own, as the zygotes will import it, so the agent's
    process never runs a handler module's code.
    """
    for name in handlers:
        if not HANDLER_NAME.fullmatch(name):
            raise HandlerRegistrationError(
                f"agent_handlers: {name!r} is not module:function (e.g. 'pkg.tasks:resize')"
            )
    if not handlers:
        return
    done = subprocess.run(
        [sys.executable, "-I", str(SERVER), "--check", *handlers],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        # The check prints one line; a crash of the interpreter itself leaves a traceback.
        lines = (done.stdout.strip() or done.stderr.strip() or "failed").splitlines()
        raise HandlerRegistrationError(f"agent_handlers: cannot load {lines[-1]}")


class HandlerExecutor(TaskExecutor):
    task_type = TaskType.HANDLER

    def __init__(
        self,
        limits: ExecutorLimits | None = None,
        pool: ZygotePool | None = None,
        warm_fork: bool = True,
        handlers: tuple[str, ...] = (),
    ) -> None:
        if pool is None and warm_fork:
            # A pool of its own still preloads the handlers (the factory's shared one does).
            pool = ZygotePool(preload=handler_modules(handlers))
            super().__init__(limits, pool, warm_fork)
            self._owns_pool = True
        else:
            super().__init__(limits, pool, warm_fork)
        self.handlers = frozenset(handlers)

    def validate(self, task: Task) -> str | None:
        problem = super().validate(task)
        if problem:
            return problem
        try:
            name, _ = handler_call(task.payload)
        except ValueError as exc:  # a hand-pushed message skips nothing: validate_spec ran
            return f"bad HANDLER payload: {exc}"
        if name not in self.handlers:
            known = ", ".join(sorted(self.handlers)) or "none (agent_handlers is empty)"
            return f"unknown handler {name!r}: not registered with this agent (registered: {known})"
        return None

    def prepare(self, task: Task) -> list[str]:
        # Without a zygote: the same call in a fresh interpreter (zygote_server.run_one_call).
        name, args = handler_call(task.payload)
        return [sys.executable, "-I", str(SERVER), "--call", name, json.dumps(args)]

    def execute(
        self,
        task: Task,
        argv: list[str],
        on_line: LineListener | None,
        should_cancel: Callable[[], bool] | None,
    ) -> ProcessOutcome:
        # The child's stdout carries the result alone (the function's prints go to stderr):
        # it is the task's result, not a log line, and storing it twice cost a write per task.
        def stderr_only(stream: str, line: str) -> None:
            if stream != "stdout" and on_line is not None:
                on_line(stream, line)

        outcome = super().execute(task, argv, stderr_only, should_cancel)
        # A JSON document never starts with "[stderr] ", so this keeps exactly the log.
        outcome.lines = [line for line in outcome.lines if line.startswith("[stderr] ")]
        return outcome

    def start_in_zygote(self, pool: ZygotePool, task: Task, argv: list[str]) -> Child:
        name, args = handler_call(task.payload)
        return pool.call(name, args, env=task_environment(task))
