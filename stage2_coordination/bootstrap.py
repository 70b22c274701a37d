"""Stage 2 composition root: every object the scheduler and the agent use is built here, once.

Read top to bottom to see the whole stage.

Scheduler: ZooKeeper client (cached, retrying) -> live-agents view (watches) -> election ->
Redis dispatcher (fenced scripts) -> placement strategy (from config) -> scheduler, with the
composite coordinator its leader runs (the same view: a broadcast goes to the agents it sees).

Agent: the one agent, its intake reading its own `agent:{agentId}:tasks` inbox instead of
`queue:pending`, without the Redis reaper (ZooKeeper says who is alive now), plus a registry
that keeps `/live-agents/{agentId}` current and pauses the agent while ZooKeeper is unsure.
"""

from __future__ import annotations

import signal
import sys

from common import keys
from common.adapters.redis_agent import (
    RedisChainedReport,
    RedisControl,
    RedisEventSink,
    RedisListIntake,
    ReliableClaim,
)
from common.adapters.redis_client import redis_client
from common.adapters.redis_composite import RedisCompositeStore
from common.adapters.redis_dispatch import RedisDispatcher
from common.adapters.redis_metrics import observe_redis
from common.adapters.redis_outcome import RedisOutcomeWriter
from common.adapters.redis_queue import RedisWorkQueue
from common.adapters.redis_retention import retention_of
from common.adapters.redis_store import RedisTaskStore
from common.agent import Agent
from common.agent.options import agent_options, executors_for
from common.config import Settings
from common.coordination.agent_info import AgentInfo
from common.coordination.agent_lifecycle import run_registered_agent
from common.coordination.election import LeaderElection
from common.coordination.live_agents import LiveAgentsView
from common.coordination.load_reports import ThrottledLoad
from common.coordination.registry import AgentRegistry
from common.coordination.zk import CoordinationUnavailable, close_zk, get_zk
from common.domain.backoff import ExponentialBackoff
from common.scheduling.checker import run_checker
from common.scheduling.composite import CompositeCoordinator
from common.scheduling.metrics import observe_scheduler
from common.scheduling.scheduler import Scheduler
from common.scheduling.schedules import firer_of
from common.scheduling.strategies import make_strategy
from common.stages import StageSpec


def build_scheduler(settings: Settings) -> Scheduler:
    zk = get_zk(settings)
    client = redis_client(settings.redis_url)
    store = RedisTaskStore(client)
    view = LiveAgentsView(zk)
    actor = f"scheduler:{settings.scheduler_id}"
    return Scheduler(
        settings.scheduler_id,
        RedisDispatcher(
            client,
            store,
            settings.max_payload_bytes,
            max_lost_attempts=settings.max_lost_attempts,
            dead_letter_max=settings.dead_letter_max,
        ),
        view,
        LeaderElection(zk, settings.scheduler_id),
        make_strategy(settings.scheduler_strategy),
        agent_backlog=settings.scheduler_agent_backlog,
        poll_timeout=settings.scheduler_poll_timeout,
        sweep_interval=settings.scheduler_sweep_interval,
        housekeeping=[retention_of(client, settings).maybe_sweep],
        coordinator=CompositeCoordinator(RedisCompositeStore(client), view, actor),
        firer=firer_of(client, settings),
    )


# --8<-- [start:build-agent]
def build_agent(settings: Settings) -> tuple[Agent, AgentRegistry]:
    client = redis_client(settings.redis_url)
    store = RedisTaskStore(client)
    # The stage 1 queue, reading this agent's own inbox; what it gives back goes to
    # queue:pending, where the scheduler places it again (never into a dead agent's inbox).
    queue = RedisWorkQueue(
        client,
        store,
        source=keys.agent_tasks(settings.agent_id),
        requeue_to=keys.PENDING_QUEUE,
        max_payload_bytes=settings.max_payload_bytes,
        max_lost_attempts=settings.max_lost_attempts,
        dead_letter_max=settings.dead_letter_max,
    )
    intake = RedisListIntake(queue, settings.agent_id, ReliableClaim())
    writer = RedisOutcomeWriter(
        client, store, ExponentialBackoff(settings.retry_backoff_base, settings.retry_backoff_max)
    )
    sink = RedisEventSink(queue, writer, settings.agent_id, settings.heartbeat_ttl)
    executors = executors_for(settings)
    # No reaper: ZooKeeper says who is alive, and the leader fails over the rest.
    agent = Agent(
        settings.agent_id,
        intake,
        sink,
        RedisControl(client),
        executors,
        chain=RedisChainedReport(intake, sink),
        **agent_options(settings),
    )
    info = AgentInfo(
        agent_id=settings.agent_id,
        capacity=settings.agent_capacity,
        task_types=[t.value for t in executors.supported()],
    )
    registry = AgentRegistry(get_zk(settings), info, agent.paused)
    agent.on_load_change = ThrottledLoad(registry.report_load)
    return agent, registry


# --8<-- [end:build-agent]


def run_scheduler(settings: Settings) -> None:
    try:
        scheduler = build_scheduler(settings)
    except CoordinationUnavailable as exc:
        sys.exit(f"error: {exc}")
    # The operator port (if served): the scheduler's own checks first (not ready before it
    # sees ZooKeeper and a leader), then the queues' state and Redis.
    observe_scheduler(scheduler)
    observe_redis(settings.redis_url)
    # SIGTERM: stop leading (the lock node goes with the session close below, so a standby
    # takes over at once instead of after a session timeout).
    signal.signal(signal.SIGTERM, lambda *_: scheduler.stop())
    signal.signal(signal.SIGINT, lambda *_: scheduler.stop())
    try:
        scheduler.run_forever()
    finally:
        close_zk(settings)


def run_agent(settings: Settings) -> None:
    try:
        agent, registry = build_agent(settings)
    except CoordinationUnavailable as exc:
        sys.exit(f"error: {exc}")

    run_registered_agent(agent, registry, settings)


def run_guarantee_checker(settings: Settings) -> None:
    # Stage 5's checker, runnable from this stage on (not in the default topology: start it
    # with `tasklab run checker`). Elected on /checker-leader, agents live per ZooKeeper.
    run_checker(settings, coordinated=True)


STAGE = StageSpec(
    number=2,
    title="ZooKeeper coordination: agent registry, leader-elected scheduler, failover",
    roles={"scheduler": run_scheduler, "agent": run_agent, "checker": run_guarantee_checker},
    services=("redis", "zookeeper"),
    # Two schedulers: one leads, one stands by to show failover.
    topology=(("scheduler", 2), ("agent", 3)),
)
