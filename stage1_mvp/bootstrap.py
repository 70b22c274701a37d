"""Stage 1 composition root: every object the stage 1 agent uses is built here, once.

Read this file top to bottom to see the whole stage: Redis client -> task store -> work queue
-> executors -> claim strategy -> agent.
"""

from __future__ import annotations

import signal

from common.adapters.redis_client import redis_client
from common.adapters.redis_queue import RedisWorkQueue
from common.adapters.redis_store import RedisTaskStore
from common.agent import Agent, ClaimStrategy, ReliableClaim
from common.config import Settings
from common.executors import ExecutorLimits, default_factory
from common.retry import ExponentialBackoff
from common.stages import StageSpec
from stage1_mvp.naive_claim import NaiveClaim

CLAIMS: dict[str, type[ClaimStrategy]] = {"reliable": ReliableClaim, "naive": NaiveClaim}


def build_agent(settings: Settings) -> Agent:
    client = redis_client(settings.redis_url)
    store = RedisTaskStore(client)
    queue = RedisWorkQueue(
        client,
        store,
        max_payload_bytes=settings.max_payload_bytes,
        backoff=ExponentialBackoff(settings.retry_backoff_base, settings.retry_backoff_max),
        max_lost_attempts=settings.max_lost_attempts,
    )
    executors = default_factory(
        ExecutorLimits(
            output_cap_bytes=settings.output_cap_bytes, max_log_lines=settings.max_log_lines
        )
    )
    return Agent(
        settings.agent_id,
        queue,
        executors,
        claim=CLAIMS[settings.agent_claim](),
        capacity=settings.agent_capacity,
        heartbeat_interval=settings.heartbeat_interval,
        heartbeat_ttl=settings.heartbeat_ttl,
        reaper_interval=settings.reaper_interval,
    )


def run_agent(settings: Settings) -> None:
    agent = build_agent(settings)
    # SIGTERM (docker stop, kubectl delete, Ctrl-C) = finish what is running, take nothing new.
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stopping.set())
    agent.run_forever()


STAGE = StageSpec(number=1, title="Redis list queue + agent", roles={"agent": run_agent})
