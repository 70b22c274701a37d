"""The naive claim, kept on purpose to be broken: BRPOP.

BRPOP removes the message from Redis and hands it to this process. From that moment the task
exists only in this agent's memory: kill -9 the agent mid-task and the task is gone: not in the
queue, stuck RUNNING in its hash forever, no one will ever run it. Run `tasklab run agent
--stage 1` with `TASKLAB_AGENT_CLAIM=naive` and follow the README's "Break it" to watch it
happen; `common.adapters.redis_agent.ReliableClaim` is the fix.
"""

from __future__ import annotations

from common.adapters.redis_agent import ClaimStrategy
from common.adapters.redis_queue import RedisWorkQueue


class NaiveClaim(ClaimStrategy):
    tracked = False

    def take(self, queue: RedisWorkQueue, agent_id: str, timeout: float) -> str | None:
        popped = queue.client.brpop([queue.source], timeout=timeout)
        if popped is None:
            return None
        _, raw = popped
        return raw.decode() if isinstance(raw, bytes) else raw
