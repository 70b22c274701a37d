"""Stage 1: a priority claim (1.1) and a decide() that does not retry what cannot run (1.2)."""

from __future__ import annotations

import functools

from common import keys
from common.adapters.redis_agent import ClaimStrategy
from common.adapters.redis_queue import RedisWorkQueue
from common.domain import outcome
from common.domain.transitions import TaskStatus

HIGH = "queue:pending:high"


class PriorityClaim(ClaimStrategy):
    """LMOVE from the high list without blocking, then BLMOVE from the normal one: both move
    the message onto the processing list atomically, so at-least-once holds for either. A high
    message pushed while the agent blocks on the normal list waits at most `timeout`."""

    tracked = True

    def take(self, queue: RedisWorkQueue, agent_id: str, timeout: float) -> str | None:
        raw = queue.client.lmove(HIGH, keys.processing(agent_id), "RIGHT", "LEFT")
        if raw is not None:
            return raw.decode() if isinstance(raw, bytes) else raw
        return queue.take_reliably(agent_id, timeout)


# 126: found but not executable; 127: not found. No retry can change either.
CANNOT_RUN = {126: "cannot be executed", 127: "command not found"}


def fail_fast(decide):
    @functools.wraps(decide)
    def decide_failing_fast(report, **kwargs):
        decision = decide(report, **kwargs)
        if decision.verdict is outcome.Verdict.RETRY and report.exit_code in CANNOT_RUN:
            error = f"{report.error or 'failed'} ({CANNOT_RUN[report.exit_code]}): not retried"
            fields = {k: v for k, v in decision.fields.items() if k != "retriesUsed"}
            return outcome.Decision(
                outcome.Verdict.FAILED, TaskStatus.FAILED, {**fields, "error": error}, (), error
            )
        return decision

    return decide_failing_fast


def install() -> None:
    from stage1_mvp import bootstrap

    bootstrap.CLAIMS["priority"] = PriorityClaim
    if not hasattr(outcome.decide, "__wrapped__"):
        outcome.decide = fail_fast(outcome.decide)
