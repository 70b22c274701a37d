"""The executor template: validate -> prepare -> execute -> report.

Pattern: Template Method (introduced in stage 1). Every task type runs the same four steps in
the same order; a new type overrides only `validate` and `prepare` (what to run), and at most
`spawner` (how its child starts), never the delicate part (process groups, capped capture,
the deadline), which lives once in `execute`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from common.domain.task import Task, TaskType
from common.executors.process import (
    Child,
    LineListener,
    ProcessOutcome,
    Spawner,
    popen_child,
    run_process,
)
from common.executors.zygote import ZygoteError, ZygotePool
from common.observability import get_logger

log = get_logger("tasklab.executor")


@dataclass(frozen=True)
class ExecutorLimits:
    """What one attempt may keep of its output, and how long a kill is polite.

    `ExecutionResult.result` holds at most `output_cap_bytes` of stdout; `.lines` at most
    `max_log_lines` lines and `max_log_bytes` bytes, each line cut at `max_line_bytes` and
    marked; `on_line` listeners get the same cut lines. Whatever a task prints, the agent's
    memory for it stays within these (plus one 64 KiB read buffer per stream).
    """

    output_cap_bytes: int = 64 * 1024
    max_log_lines: int = 1000
    kill_grace_seconds: float = 1.0
    max_line_bytes: int = 8 * 1024
    max_log_bytes: int = 256 * 1024


def task_environment(task: Task) -> dict[str, str | None]:
    """What a task finds in its environment besides the agent's own variables: which task and
    attempt it is, and for a composite's child its place in its parent and its input. A
    variable the task does not have is None (removed): a plain task must not inherit a shard
    index from the agent's own environment.
    """
    return {
        "TASKLAB_TASK_ID": task.task_id,
        "TASKLAB_ATTEMPT": str(task.attempt),
        **{
            name: None if value is None else str(value)
            for name, value in (
                ("TASKLAB_PARENT_ID", task.parent_id),
                ("TASKLAB_SHARD_INDEX", task.shard_index),
                ("TASKLAB_SHARD_TOTAL", task.shard_total),
                ("TASKLAB_INPUT", task.input),
                ("TASKLAB_NODE", task.node),
            )
        },
    }


def child_environment(task: Task) -> dict[str, str]:
    """The whole environment of a task started by a fresh exec: the agent's, and the task's."""
    env = dict(os.environ)
    for name, value in task_environment(task).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@dataclass(frozen=True)
class ExecutionResult:
    success: bool
    exit_code: int | None
    result: str  # captured stdout (capped)
    error: str | None  # why it failed, for a human
    lines: list[str]
    timed_out: bool = False
    cancelled: bool = False
    duration: float = 0.0


# --8<-- [start:template]
class TaskExecutor(ABC):
    task_type: TaskType

    def __init__(
        self,
        limits: ExecutorLimits | None = None,
        pool: ZygotePool | None = None,
        warm_fork: bool = True,
    ) -> None:
        self.limits = limits or ExecutorLimits()
        # A pool handed in (the factory shares one between types) is its owner's to close.
        self._owns_pool = pool is None and warm_fork
        self.pool = ZygotePool() if self._owns_pool else pool

    def run(
        self,
        task: Task,
        on_line: LineListener | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> ExecutionResult:
        """The template method. Subclasses do not override this.

        It never raises for a task's sake: a payload the OS or the compiler refuses, a zygote
        that dies under the task, even a bug below, end this attempt FAILED with the reason.
        """
        problem = self.validate(task)
        if problem:
            return ExecutionResult(False, None, "", problem, [])
        try:
            argv = self.prepare(task)
            outcome = self.execute(task, argv, on_line, should_cancel)
        except Exception as exc:  # noqa: BLE001 - the agent must live on to run the next task
            log.exception("executor failed on task %s", task.task_id)
            return ExecutionResult(False, None, "", f"executor error: {exc}", [])
        return self.report(task, outcome)

    def validate(self, task: Task) -> str | None:
        """Return a reason the task cannot run, or None."""
        if task.task_type != self.task_type:
            return f"{type(self).__name__} cannot run {task.task_type} tasks"
        return None

    @abstractmethod
    def prepare(self, task: Task) -> list[str]:
        """The argv that runs this task."""

    def execute(
        self,
        task: Task,
        argv: list[str],
        on_line: LineListener | None,
        should_cancel: Callable[[], bool] | None,
    ) -> ProcessOutcome:
        spawn = self.spawner(task, argv)
        return run_process(
            argv,
            timeout=task.execution_timeout,
            output_cap=self.limits.output_cap_bytes,
            max_lines=self.limits.max_log_lines,
            on_line=on_line,
            should_cancel=should_cancel,
            kill_grace=self.limits.kill_grace_seconds,
            spawn=spawn,
            # Only a fresh exec needs the whole environment; a copy of os.environ per task
            # cost ~0.1 ms of the agent's CPU, and the spawner builds one if it falls back.
            env=child_environment(task) if spawn is None else None,
            max_line_bytes=self.limits.max_line_bytes,
            max_log_bytes=self.limits.max_log_bytes,
        )

    def spawner(self, task: Task, argv: list[str]) -> Spawner | None:
        """How the child is started: forked from a warm zygote, else a fresh exec of `argv`.

        Either way the child is the same: its own session, stdout and stderr piped, the same
        exit code. The zygote also kills the child's group if this agent dies (zygote.py).
        """
        pool = self.pool
        if pool is None:
            return None

        def spawn() -> Child:
            try:
                return self.start_in_zygote(pool, task, argv)
            except (ZygoteError, OSError) as exc:
                log.warning("warm fork unavailable (%s); starting a fresh process", exc)
                return popen_child(argv, env=child_environment(task))

        return spawn

    def start_in_zygote(self, pool: ZygotePool, task: Task, argv: list[str]) -> Child:
        """Fork a warm zygote and exec `argv` there; a type may run its child differently.
        The task's variables (task_environment) are set in the child only, never the zygote."""
        return pool.exec(argv, env=task_environment(task))

    def warm(self, count: int = 1) -> None:
        """Start zygotes ahead of the first task (agent start-up), not during it."""
        if self.pool is not None:
            self.pool.warm(count)

    def close(self) -> None:
        """Release what the executor keeps between tasks."""
        if self.pool is not None and self._owns_pool:
            self.pool.close()

    def report(self, task: Task, outcome: ProcessOutcome) -> ExecutionResult:
        error = None
        if outcome.error:
            error = outcome.error
        elif outcome.timed_out:
            error = f"timed out after {task.execution_timeout}s; process group killed"
        elif outcome.cancelled:
            error = "cancelled; process group killed"
        elif outcome.exit_code != 0:
            tail = outcome.stderr.strip().splitlines()[-1:] or [""]
            error = f"exit code {outcome.exit_code}" + (f": {tail[0]}" if tail[0] else "")
        if outcome.truncated:
            outcome.stdout += "\n[output truncated]"
        return ExecutionResult(
            success=error is None,
            exit_code=outcome.exit_code,
            result=outcome.stdout,
            error=error,
            lines=outcome.lines,
            timed_out=outcome.timed_out,
            cancelled=outcome.cancelled,
            duration=outcome.duration,
        )


# --8<-- [end:template]
