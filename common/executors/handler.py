"""Runs a HANDLER task: a call of a Python function registered with the agent.

The function never runs in the agent. Where it runs is the agent's `agent_handler_mode`:

- "warm" (the default): in a warm worker of the agent's pool, a process that has imported the
  handlers' modules and calls one function after another, as a Celery prefork process does
  (warm_worker.py). A call costs two messages; a timeout or a cancel kills the worker, which
  is replaced. Calls share the worker's state (globals, threads, open files) until it is
  recycled after `agent_handler_max_calls` calls.
- "fork": in a child forked for the call from a warm zygote (zygote_server.py), the same child
  a PYTHON_SCRIPT task gets: nothing a call changes reaches the next, for ~1 ms of fork and
  copy-on-write per task.

Why warm is the default: a handler is code the agent's operator registered and deployed, not
code a submitter sent, and it is written to be called again, as a Celery task is; the measured
gain and the full trade-off are in warm_worker.py and docs/performance.md. Either way
`run_process` keeps the deadline, the cancel and the capped capture, a killed call takes only
its own task, and the pool process dies with the agent. The function's return value, as
JSON, is the task's result; what it prints is the task's log. Without zygotes (warm forks off,
or none can start) the call runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable

from common.domain.task import HANDLER_NAME, Task, TaskType, handler_call
from common.executors.base import ExecutorLimits, TaskExecutor, task_environment
from common.executors.process import Child, LineListener, ProcessOutcome
from common.executors.warm_worker import HandlerWorkerPool
from common.executors.zygote import SERVER, ZygotePool

HANDLER_MODES = ("warm", "fork")


_last_call = threading.local()


def parsed_call(payload: str) -> tuple[str, dict]:
    """`handler_call(payload)`, parsed once per task although validate, prepare and the spawner
    each need it (a strict JSON parse three times was a fifth of the executor's CPU for a
    no-op call). One entry per agent thread; the answer is a pure function of the payload, so
    a remembered one is always right."""
    if getattr(_last_call, "payload", None) is not payload:
        _last_call.call = handler_call(payload)
        _last_call.payload = payload
    return _last_call.call


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
        mode: str = "warm",
        max_calls: int = 1000,
    ) -> None:
        if mode not in HANDLER_MODES:
            raise ValueError(f"handler mode must be one of {HANDLER_MODES}, not {mode!r}")
        if pool is None and warm_fork:
            # A pool of its own still preloads the handlers (the factory's shared one does).
            pool = ZygotePool(preload=handler_modules(handlers))
            super().__init__(limits, pool, warm_fork)
            self._owns_pool = True
        else:
            super().__init__(limits, pool, warm_fork)
        self.handlers = frozenset(handlers)
        # Warm workers live in the pool's zygotes: without zygotes, every call is a fresh exec.
        self.workers = (
            HandlerWorkerPool(self.pool, max_calls)
            if mode == "warm" and self.pool is not None
            else None
        )

    def validate(self, task: Task) -> str | None:
        problem = super().validate(task)
        if problem:
            return problem
        try:
            name, _ = parsed_call(task.payload)
        except ValueError as exc:  # a hand-pushed message skips nothing: validate_spec ran
            return f"bad HANDLER payload: {exc}"
        if name not in self.handlers:
            known = ", ".join(sorted(self.handlers)) or "none (agent_handlers is empty)"
            return f"unknown handler {name!r}: not registered with this agent (registered: {known})"
        return None

    def prepare(self, task: Task) -> list[str]:
        # Without a zygote: the same call in a fresh interpreter (zygote_server.run_one_call).
        name, args = parsed_call(task.payload)
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
        name, args = parsed_call(task.payload)
        if self.workers is not None:
            return self.workers.call(name, args, env=task_environment(task))
        return pool.call(name, args, env=task_environment(task))

    def warm(self, count: int = 1) -> None:
        # The workers first: each takes a zygote of its own out of the pool, and the pool
        # then starts `count` more for the other task types (and the fork fallback).
        if self.workers is not None:
            self.workers.warm(count)
        super().warm(count)

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()
        super().close()
