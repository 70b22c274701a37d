"""The cluster as Redis holds it, read when Prometheus scrapes: queues, agents, fencing.

Nothing here is counted in a role's memory: each scrape reads the queues' lengths and the
counters the Lua scripts keep (`stats:transitions`, `stats:dead-letter`) in two pipelined
round trips (the second needs the agent ids the first returns), so every role that serves
them shows the same numbers, and a restarted role loses none. Use `max` to aggregate them
across roles, not `sum`.

A scrape must not hang on a Redis that is paused or gone: the collector has its own client
with a short socket timeout, and says `tasklab_redis_up 0` instead of failing the scrape (the
role's own families are still worth having then).
"""

from __future__ import annotations

import time

from redis import Redis

from common import keys
from common.adapters.redis_client import as_text
from common.observability import metrics
from common.observability.health import CHECKS

SCRAPE_TIMEOUT = 2.0
REJECTED_PREFIX = "rejected_"
# What prelude.lua's transition() and give_back() count as `rejected_<reason>`.
KNOWN_REJECTIONS = ("illegal", "missing", "reincarnated", "stale_attempt", "stale_epoch")
SHARED_QUEUES = (
    ("pending", "llen", keys.PENDING_QUEUE),
    ("scheduling", "llen", keys.SCHEDULING_QUEUE),
    ("delayed", "zcard", keys.DELAYED_QUEUE),
    ("dead_letter", "llen", keys.DEAD_LETTER),
    # Stage 5: final states the archiver has not archived yet (it deletes each archived entry,
    # so the length is the backlog). 0 while no archiver created the stream.
    ("archive_outbox", "xlen", keys.ARCHIVE_OUTBOX),
)


def scrape_client(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=SCRAPE_TIMEOUT, socket_connect_timeout=SCRAPE_TIMEOUT)


class RedisStateCollector:
    def __init__(self, client: Redis) -> None:
        self.client = client

    def describe(self):
        # Nothing up front: registering must not read Redis (it may not answer yet).
        return []

    def collect(self):
        up = metrics.F_REDIS_UP.gauge_family()
        try:
            families = self._read()
        except Exception:  # noqa: BLE001 - a scrape answers whatever Redis does
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list:
        pipe = self.client.pipeline(transaction=False)
        pipe.smembers(keys.AGENTS_SEEN)
        for _, command, key in SHARED_QUEUES:
            getattr(pipe, command)(key)
        pipe.hgetall(keys.TRANSITION_STATS)
        pipe.hget(keys.DEAD_LETTER_STATS, "dropped")
        pipe.get(keys.SCHEDULER_FENCE)
        pipe.xrange(keys.ARCHIVE_OUTBOX, count=1)
        seen, *depths, transitions, dropped, fence, oldest = pipe.execute()
        agents = sorted(as_text(a) for a in seen)
        pipe = self.client.pipeline(transaction=False)
        for agent in agents:
            pipe.exists(keys.heartbeat(agent))
            pipe.llen(keys.agent_tasks(agent))
            pipe.llen(keys.processing(agent))
        per_agent = pipe.execute() if agents else []

        depth = metrics.F_QUEUE_DEPTH.gauge_family()
        for (name, _, _), value in zip(SHARED_QUEUES, depths, strict=True):
            depth.add_metric([name, ""], int(value))
        beating = 0
        for n, agent in enumerate(agents):
            alive, inbox, processing = per_agent[3 * n : 3 * n + 3]
            beating += int(alive)
            depth.add_metric(["inbox", agent], int(inbox))
            depth.add_metric(["processing", agent], int(processing))
        heartbeating = metrics.F_AGENTS_HEARTBEATING.gauge_family()
        heartbeating.add_metric([], beating)

        stats = {as_text(k): int(v) for k, v in transitions.items()}
        rejected = metrics.F_FENCED.counter_family()
        reasons = dict.fromkeys(KNOWN_REJECTIONS, 0)
        for field, value in stats.items():
            if field.startswith(REJECTED_PREFIX):
                reasons[field.removeprefix(REJECTED_PREFIX)] = value
        for reason in sorted(reasons):
            # Every known reason from the start, at 0: rate() needs a series before its first
            # increment, or the first rejection is invisible to it.
            rejected.add_metric([reason], reasons[reason])
        accepted = metrics.F_TRANSITIONS.counter_family()
        accepted.add_metric([], stats.get("accepted", 0))
        trimmed = metrics.F_DEAD_LETTER_DROPPED.counter_family()
        trimmed.add_metric([], int(dropped or 0))
        epoch = metrics.F_FENCE.gauge_family()
        epoch.add_metric([], int(fence or 0))
        outbox_age = metrics.F_ARCHIVE_OUTBOX_AGE.gauge_family()
        outbox_age.add_metric([], _age(oldest))
        return [depth, heartbeating, rejected, accepted, trimmed, epoch, outbox_age]


def _age(oldest: list) -> float:
    """Age of a stream's first entry from its id (milliseconds since the epoch, then a
    sequence number); 0 for an empty or missing stream."""
    if not oldest:
        return 0.0
    millis = int(as_text(oldest[0][0]).split("-", 1)[0])
    return max(0.0, time.time() - millis / 1000)


def observe_redis(url: str) -> None:
    """Serve the cluster state from Redis at `url`, and make answering Redis a readiness check."""
    client = scrape_client(url)
    metrics.register_collector("redis-state", RedisStateCollector(client))

    def redis() -> tuple[bool, str]:
        client.ping()
        return True, "PING answered"

    CHECKS.add("redis", redis)
