"""The single table of legal state transitions.

Pattern: State (introduced in stage 1). A task's behaviour depends on its state, and what may
happen next is data, not scattered `if`s: this table is the only place that says it. The Redis
Lua scripts are *generated* from it (see `common.adapters.redis_scripts`), so the store enforces
exactly what this file says, atomically, next to the data.
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    # A child of a composite task that is not released yet: held back by its parent's
    # parallelism cap or by its upstream tasks (common/domain/composite.py). On no queue.
    WAITING = "WAITING"
    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    DISPATCHED = "DISPATCHED"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    # A child that will never run: its upstream tasks ended so that its trigger rule cannot
    # hold, or it is a reduce step whose children failed.
    SKIPPED = "SKIPPED"


S = TaskStatus

LEGAL_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    # A composite's child: released onto the queue, cancelled with its parent, or skipped.
    S.WAITING: frozenset({S.PENDING, S.CANCELLED, S.SKIPPED}),
    # Stage 1 agents claim straight from the queue (PENDING -> RUNNING); from stage 2 a
    # scheduler places the task first (PENDING -> SCHEDULED -> DISPATCHED -> RUNNING).
    S.PENDING: frozenset({S.SCHEDULED, S.RUNNING, S.CANCELLED}),
    # Back to PENDING: the placement failed (no live agent) or its leader was deposed.
    # FAILED: the task is pinned to one agent (a broadcast's child) and that agent is gone.
    S.SCHEDULED: frozenset({S.DISPATCHED, S.PENDING, S.FAILED, S.CANCELLED}),
    # Back to PENDING: the chosen agent died before it started the task (failover).
    S.DISPATCHED: frozenset({S.RUNNING, S.PENDING, S.CANCELLED}),
    # Back to PENDING: an automatic retry after a failure, or the agent died mid-task.
    S.RUNNING: frozenset({S.SUCCESS, S.FAILED, S.PENDING, S.CANCELLED}),
    # Terminal states have no way out: a retry by hand makes a new task.
    S.SUCCESS: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.SKIPPED: frozenset(),
}

TERMINAL_STATES: frozenset[TaskStatus] = frozenset(
    s for s, nexts in LEGAL_TRANSITIONS.items() if not nexts
)

# Going back to PENDING starts a new attempt: every write still carrying the old attempt number
# (a zombie agent, a slow scheduler) is then stale and rejected by the store. A composite's child
# released from WAITING is not going back: it starts its first attempt.
NEW_ATTEMPT_ON: frozenset[tuple[TaskStatus, TaskStatus]] = frozenset(
    (src, S.PENDING)
    for src, nexts in LEGAL_TRANSITIONS.items()
    if S.PENDING in nexts and src != S.WAITING
)


def is_legal(src: TaskStatus | str, dst: TaskStatus | str) -> bool:
    return TaskStatus(dst) in LEGAL_TRANSITIONS[TaskStatus(src)]
