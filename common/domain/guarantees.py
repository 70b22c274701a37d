"""What must never happen to a task, as pure checks over what the store says about it.

Pattern: Invariant checker (introduced in stage 5). The platform's guarantees (a running task
has a live owner, one attempt runs at a time, a timeout ends a run, no task waits for ever) are
enforced by the fenced Lua scripts, the leader's failover and the agent's timers. Enforced is
not the same as holding: a bug, a paused process or a lost watch can break one. These
functions say, for one snapshot, which guarantee is broken and since when; the checker role
(common/scheduling/checker.py) feeds them the store's state and exports the counts, and
`tasklab explain` shows a task's own findings. No I/O here, so each rule is unit-tested alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from common.domain.transitions import TaskStatus

# The `check` label of tasklab_guarantee_violations: a fixed set, so the series stay bounded.
RUNNING_WITHOUT_OWNER = "running_without_owner"
DUPLICATE_ATTEMPTS = "duplicate_attempts"
RUNNING_PAST_TIMEOUT = "running_past_timeout"
STUCK_PENDING = "stuck_pending"
STUCK_SCHEDULED = "stuck_scheduled"
STUCK_DISPATCHED = "stuck_dispatched"

STUCK = {
    TaskStatus.PENDING: STUCK_PENDING,
    TaskStatus.SCHEDULED: STUCK_SCHEDULED,
    TaskStatus.DISPATCHED: STUCK_DISPATCHED,
}
CHECKS: tuple[str, ...] = (
    RUNNING_WITHOUT_OWNER,
    DUPLICATE_ATTEMPTS,
    RUNNING_PAST_TIMEOUT,
    STUCK_PENDING,
    STUCK_SCHEDULED,
    STUCK_DISPATCHED,
)


@dataclass(frozen=True)
class TaskView:
    """The fields of `task:{taskId}` the checks read (one HMGET)."""

    task_id: str
    status: TaskStatus
    attempt: int = 1
    agent_id: str | None = None
    # updatedAt: every accepted transition sets it, so for a task in a waiting state or
    # RUNNING it is when the task entered that state.
    entered_at: float = 0.0
    execution_timeout: int = 60
    parent_id: str | None = None


@dataclass(frozen=True)
class Deadlines:
    """How long each condition may last before it counts as broken."""

    owner_grace: float = 30.0
    timeout_grace: float = 30.0
    # Per waiting state, as PowerJob has per-phase timeouts. WAITING (a composite's child held
    # back by its parent) has none: it waits for other tasks by design, for as long as they run.
    per_state: Mapping[TaskStatus, float] = field(
        default_factory=lambda: {
            TaskStatus.PENDING: 600.0,
            TaskStatus.SCHEDULED: 30.0,
            TaskStatus.DISPATCHED: 120.0,
        }
    )


@dataclass(frozen=True)
class Finding:
    check: str
    task_id: str
    since: float  # when the broken condition began (the age of a violation is now - since)
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {
            "check": self.check,
            "taskId": self.task_id,
            "since": self.since,
            "detail": self.detail,
        }


def task_findings(
    task: TaskView,
    now: float,
    deadlines: Deadlines,
    owner_live: bool | None = None,
    ownerless_since: float | None = None,
) -> list[Finding]:
    """The guarantees `task` breaks at `now`, judged from its own record.

    `owner_live`: whether the agent named in a RUNNING task's record is alive (None: not
    known, not judged). `ownerless_since`: when the caller first saw it dead; the grace runs
    from then, because the record cannot say when an agent died (it may die long after it
    started the task).
    """
    found: list[Finding] = []
    if task.status == TaskStatus.RUNNING:
        if owner_live is False:
            since = task.entered_at if ownerless_since is None else ownerless_since
            if now - since > deadlines.owner_grace:
                found.append(
                    Finding(
                        RUNNING_WITHOUT_OWNER,
                        task.task_id,
                        since,
                        f"RUNNING on {task.agent_id or 'no agent'}, which is not live, for "
                        f"{now - since:.0f}s (grace {deadlines.owner_grace:g}s)",
                    )
                )
        limit = task.execution_timeout + deadlines.timeout_grace
        if now - task.entered_at > limit:
            found.append(
                Finding(
                    RUNNING_PAST_TIMEOUT,
                    task.task_id,
                    task.entered_at + task.execution_timeout,
                    f"RUNNING for {now - task.entered_at:.0f}s, past its executionTimeout "
                    f"{task.execution_timeout}s + grace {deadlines.timeout_grace:g}s",
                )
            )
    deadline = deadlines.per_state.get(task.status)
    if deadline is not None and task.status in STUCK and now - task.entered_at > deadline:
        found.append(
            Finding(
                STUCK[task.status],
                task.task_id,
                task.entered_at + deadline,
                f"{task.status.value} for {now - task.entered_at:.0f}s, past its "
                f"{deadline:g}s deadline",
            )
        )
    return found


def duplicate_findings(
    holders: Mapping[str, Iterable[str]],
    tasks: Mapping[str, TaskView],
    live: set[str],
    now: float,
) -> list[Finding]:
    """Tasks that more than one live agent holds as an attempt it runs.

    `holders`: task id -> the agents whose processing list holds an entry of it (an agent moves
    a message there before it starts it and removes it only once the outcome is written, so
    every attempt an agent runs is on its list for the whole run). The agent a RUNNING record
    names counts as a holder too. Only live agents count: a dead agent's list is work waiting
    for its failover, not a run. Two live holders = two runs of one task at once, whatever the
    fencing later refuses of the second one's writes.
    """
    found = []
    for task_id, agents in holders.items():
        running = {a for a in agents if a in live}
        task = tasks.get(task_id)
        if (
            task is not None
            and task.status == TaskStatus.RUNNING
            and task.agent_id
            and task.agent_id in live
        ):
            running.add(task.agent_id)
        if len(running) > 1:
            found.append(
                Finding(
                    DUPLICATE_ATTEMPTS,
                    task_id,
                    now,
                    f"held by {len(running)} live agents at once: {', '.join(sorted(running))}",
                )
            )
    return found


def count_by_check(findings: Iterable[Finding]) -> dict[str, int]:
    counts = dict.fromkeys(CHECKS, 0)
    for f in findings:
        counts[f.check] += 1
    return counts


def oldest_by_check(findings: Iterable[Finding], now: float) -> dict[str, float]:
    """Per check, the age in seconds of its oldest violation (0 when there is none)."""
    oldest = dict.fromkeys(CHECKS, 0.0)
    for f in findings:
        oldest[f.check] = max(oldest[f.check], now - f.since)
    return oldest
