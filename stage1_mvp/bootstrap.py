"""Stage 1 composition root: every object the stage 1 agent uses is built here, once.

Read this file top to bottom to see the whole stage: Redis client -> task store -> work queue
-> claim strategy -> the agent's ports (intake, reports, control) -> executors -> agent, with
the reaper as its housekeeping (no leader in stage 1: every agent reaps the others).
"""

from __future__ import annotations

import signal

from common.adapters.redis_agent import (
    ClaimStrategy,
    RedisChainedReport,
    RedisControl,
    RedisEventSink,
    RedisListIntake,
    RedisReaper,
    ReliableClaim,
)
from common.adapters.redis_client import redis_client
from common.adapters.redis_metrics import observe_redis
from common.adapters.redis_outcome import RedisOutcomeWriter
from common.adapters.redis_queue import RedisWorkQueue
from common.adapters.redis_retention import retention_of
from common.adapters.redis_store import RedisTaskStore
from common.agent import Agent, Periodic
from common.agent.metrics import observe_agent
from common.agent.options import agent_options, executors_for
from common.config import Settings
from common.domain.backoff import ExponentialBackoff
from common.scheduling.checker import run_checker
from common.stages import StageSpec
from stage1_mvp.naive_claim import NaiveClaim

CLAIMS: dict[str, type[ClaimStrategy]] = {"reliable": ReliableClaim, "naive": NaiveClaim}


# --8<-- [start:build-agent]
def build_agent(settings: Settings) -> Agent:
    client = redis_client(settings.redis_url)
    store = RedisTaskStore(client)
    queue = RedisWorkQueue(
        client,
        store,
        max_payload_bytes=settings.max_payload_bytes,
        max_lost_attempts=settings.max_lost_attempts,
        dead_letter_max=settings.dead_letter_max,
    )
    claim = CLAIMS[settings.agent_claim]()
    intake = RedisListIntake(queue, settings.agent_id, claim)
    writer = RedisOutcomeWriter(
        client, store, ExponentialBackoff(settings.retry_backoff_base, settings.retry_backoff_max)
    )
    sink = RedisEventSink(queue, writer, settings.agent_id, settings.heartbeat_ttl)
    reaper = RedisReaper(queue, sink, settings.agent_id)
    retention = retention_of(client, settings)
    return Agent(
        settings.agent_id,
        intake,
        sink,
        RedisControl(client),
        executors_for(settings),
        housekeeping=[
            Periodic("reaper", settings.reaper_interval, reaper.run),
            # No leader in stage 1: every agent may sweep; each delete re-checks in its script.
            Periodic("retention", settings.reaper_interval, retention.maybe_sweep),
        ],
        # A report also moves the next message, in the same round trip: an optimisation.
        chain=RedisChainedReport(intake, sink) if isinstance(claim, ReliableClaim) else None,
        **agent_options(settings),
    )


# --8<-- [end:build-agent]


def run_agent(settings: Settings) -> None:
    agent = build_agent(settings)
    # The operator port (if served). The agent's own checks first, so it is not ready before
    # its first heartbeat; no scheduler in stage 1: the agents serve the queues' state too.
    observe_agent(agent)
    observe_redis(settings.redis_url)
    # SIGTERM (docker stop, kubectl delete, Ctrl-C) = finish what is running, take nothing new.
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stopping.set())
    agent.run_forever()


def run_guarantee_checker(settings: Settings) -> None:
    # Stage 5's checker, runnable from this stage on (not in the default topology: start it
    # with `tasklab run checker`). No ZooKeeper here: not elected (run one), and an agent is
    # live while its heartbeat key exists.
    run_checker(settings, coordinated=False)


STAGE = StageSpec(
    number=1,
    title="Redis list queue + agent",
    roles={"agent": run_agent, "checker": run_guarantee_checker},
    services=("redis",),
    topology=(("agent", 2),),
)
