"""What happens to an attempt once it has run: one pure decision, made in one place.

Whoever writes a finished attempt to the store (the agent in stages 1 and 2, the manager from
stage 3 on) asks `decide()` and then writes exactly what it answers, fenced by attempt and
epoch. The decision needs no Redis, no clock and no process: the unit tests call it directly
(tests/unit/test_outcome.py), and every stage gets the same rules.

The rules, in order:

1. The attempt was superseded (a failover gave the task to a newer attempt, or a cancel already
   ended it): nothing is written. The store would reject the write anyway; deciding it here
   saves the round trip and says why in the agent's log.
2. It succeeded: SUCCESS, with its result.
3. It was cancelled: the cancel itself was the transition, nothing more to write.
4. It failed with retries left: back to PENDING (a new attempt) after a backoff.
5. It failed with none left: FAILED, with the error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from common.domain.backoff import ExponentialBackoff
from common.domain.transitions import TaskStatus


class Verdict(StrEnum):
    SUCCESS = "SUCCESS"
    RETRY = "RETRY"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    SUPERSEDED = "SUPERSEDED"


@dataclass(frozen=True)
class AttemptReport:
    """How one attempt ended, as its agent saw it (what an executor returned)."""

    success: bool
    exit_code: int | None = None
    result: str = ""
    error: str | None = None
    timed_out: bool = False
    cancelled: bool = False  # killed because a cancel or a newer attempt said so
    superseded: bool = False  # killed (or finished) after a newer attempt took over
    duration: float = 0.0


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    # The transition to write (None: write nothing), the hash fields it sets and clears, the
    # reason recorded in the history, and for a retry how long the new attempt waits.
    to: TaskStatus | None
    fields: dict[str, str] = field(default_factory=dict)
    clear: tuple[str, ...] = ()
    reason: str = ""
    retry_delay: float | None = None

    @property
    def writes(self) -> bool:
        return self.to is not None


# --8<-- [start:decide]
def decide(
    report: AttemptReport,
    *,
    retries_used: int,
    retry_count: int,
    backoff: ExponentialBackoff,
    finished_at: float,
) -> Decision:
    """The one outcome rule of the platform (see the module docstring)."""
    fields: dict[str, str] = {"finishedAt": repr(finished_at)}
    if report.exit_code is not None:
        fields["exitCode"] = str(report.exit_code)
    if report.superseded:
        return Decision(Verdict.SUPERSEDED, None, reason="superseded by a newer attempt")
    if report.success:
        return Decision(
            Verdict.SUCCESS, TaskStatus.SUCCESS, {**fields, "result": report.result}, ("error",)
        )
    if report.cancelled:
        return Decision(Verdict.CANCELLED, None, reason="cancelled")
    error = report.error or "failed"
    if retries_used < retry_count:
        delay = backoff.delay(retries_used + 1)
        return Decision(
            Verdict.RETRY,
            TaskStatus.PENDING,
            {
                **fields,
                "error": error,
                "retriesUsed": str(retries_used + 1),
                "result": report.result,
            },
            ("agentId",),
            f"retry {retries_used + 1}/{retry_count} in {delay:.2f}s: {error}",
            retry_delay=delay,
        )
    return Decision(
        Verdict.FAILED,
        TaskStatus.FAILED,
        {**fields, "error": error, "result": report.result},
        (),
        error,
    )


# --8<-- [end:decide]


class FinalReport(StrEnum):
    """What the manager (stage 3) does with an agent's final report of an attempt."""

    APPLY = "APPLY"  # decide() and write it
    IMPLY_RUNNING = "IMPLY_RUNNING"  # RUNNING was lost on the way: apply it first, then APPLY
    STALE = "STALE"  # a report of an attempt a failover replaced
    DUPLICATE = "DUPLICATE"  # already final (a redelivery, or a cancel won): drop the entry
    UNPROCESSABLE = "UNPROCESSABLE"  # cannot be right: dead-letter it with the reason


# --8<-- [start:judge-final]
def judge_final(
    *,
    task_status: TaskStatus,
    task_attempt: int,
    task_agent: str | None,
    attempt: int,
    agent: str,
    status: str,
) -> tuple[FinalReport, str]:
    """How a final report (`status` of `attempt`, from `agent`) meets the task as stored."""
    if task_attempt != attempt:
        return FinalReport.STALE, f"task is at attempt {task_attempt}"
    if task_status in (TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED):
        return FinalReport.DUPLICATE, f"task is already {task_status.value}"
    if status == "CANCELLED" or task_status not in (TaskStatus.RUNNING, TaskStatus.DISPATCHED):
        return FinalReport.UNPROCESSABLE, f"cannot apply {status} to a {task_status.value} task"
    if task_agent != agent:
        return FinalReport.UNPROCESSABLE, f"attempt {attempt} runs on {task_agent}"
    if task_status == TaskStatus.DISPATCHED:
        # The attempt's RUNNING never arrived (dead-lettered, or lost by a broker): a final
        # report from the agent the attempt was dispatched to says it ran.
        return FinalReport.IMPLY_RUNNING, "RUNNING implied by the final report"
    return FinalReport.APPLY, ""


# --8<-- [end:judge-final]
