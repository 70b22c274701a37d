"""Stage 3 composition root: every object the scheduler, the agent and the manager use is built
here, once. Read top to bottom to see the whole stage.

Every role first makes sure the topics exist (`ensure_topics`), then:

Scheduler: stage 2's scheduler (ZooKeeper election, live-agents view, placement strategy,
composite coordinator), given a `KafkaDispatcher`: the same fenced Redis dispatch, plus a
message on task-dispatch-topic for the chosen agent and a relay for messages that never made it.

Agent: the one agent, its intake reading task-dispatch-topic in its own consumer group and
starting only what its inbox ledger confirms (`KafkaDispatchIntake`), its reports (RUNNING /
SUCCESS / FAILED, output lines, heartbeats) published on the bus (`KafkaEventSink`); registered
in ZooKeeper exactly as in stage 2 (same registry, same pause on SUSPENDED).

Manager (born in this stage): one at-least-once consumer over the status, logs and heartbeat
topics, applying them to Redis through the fenced transitions, with a dead-letter topic for
what it can never apply and the missed-heartbeat failover.
"""

from __future__ import annotations

import signal
import sys
import threading

from confluent_kafka import KafkaException
from redis.exceptions import RedisError

from common import keys
from common.adapters.redis_agent import RedisControl
from common.adapters.redis_client import redis_client
from common.adapters.redis_composite import RedisCompositeStore
from common.adapters.redis_dispatch import RedisDispatcher
from common.adapters.redis_events import DispatchLedger
from common.adapters.redis_failover import RedisFailover
from common.adapters.redis_metrics import observe_redis
from common.adapters.redis_outcome import RedisOutcomeWriter
from common.adapters.redis_retention import retention_of
from common.adapters.redis_store import RedisTaskStore
from common.agent import Agent
from common.agent.options import agent_options, executors_for
from common.config import ConfigError, Settings
from common.config.settings import check_transport_limits
from common.coordination.agent_info import AgentInfo
from common.coordination.agent_lifecycle import run_registered_agent
from common.coordination.dispatch_partitions import (
    announced_partitions,
    claim_partition,
    reclaim_partition,
)
from common.coordination.election import LeaderElection
from common.coordination.live_agents import LiveAgentsView
from common.coordination.load_reports import ThrottledLoad
from common.coordination.registry import AgentRegistry
from common.coordination.zk import CoordinationUnavailable, close_zk, get_zk
from common.domain.backoff import ExponentialBackoff
from common.messaging.agent_adapters import KafkaDispatchIntake, KafkaEventSink
from common.messaging.clients import Bus, EventPublisher
from common.messaging.consumer import AtLeastOnceConsumer
from common.messaging.dead_letter import DeadLetters
from common.messaging.dead_letter_review import KafkaDeadLetterReview
from common.messaging.dispatch import KafkaDispatcher
from common.messaging.durability import RedisDurability
from common.messaging.heartbeat_monitor import HeartbeatMonitor, RebalanceFeed
from common.messaging.manager import TaskEventManager
from common.messaging.metrics import observe_consumer
from common.messaging.topics import HEARTBEAT, LOGS, STATUS, ensure_topics
from common.observability import get_logger
from common.scheduling.checker import run_checker
from common.scheduling.composite import CompositeCoordinator
from common.scheduling.metrics import observe_scheduler
from common.scheduling.scheduler import Scheduler
from common.scheduling.schedules import firer_of
from common.scheduling.strategies import make_strategy
from common.stages import StageSpec

MANAGER_GROUP = "tasklab-manager"

log = get_logger("tasklab.stage3")


def connect_bus(settings: Settings) -> Bus:
    """The bus, with its topics created; exits with one line if Kafka cannot be reached."""
    try:
        # The payload limit must fit what Kafka carries; refuse to start otherwise.
        check_transport_limits(settings, 3)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    bus = Bus.from_settings(settings)
    try:
        ensure_topics(bus.bootstrap, bus.namespace)
    except KafkaException as exc:
        sys.exit(
            f"error: cannot reach Kafka at {bus.bootstrap} ({exc.args[0].str()}); is it "
            "running? (`tasklab dev up --stage 3` starts one)"
        )
    return bus


# -- scheduler ---------------------------------------------------------------------------------
def build_scheduler(settings: Settings, bus: Bus) -> tuple[Scheduler, EventPublisher]:
    zk = get_zk(settings)
    client = redis_client(settings.redis_url)
    publisher = EventPublisher(bus, client_id=f"scheduler-{settings.scheduler_id}")
    view = LiveAgentsView(zk)

    def partition_of(agent_id: str) -> int | None:
        # Each agent reads one partition of the dispatch topic and names it in its node.
        info = view.info(agent_id)
        return None if info is None else info.dispatch_partition

    dispatcher = KafkaDispatcher(
        client,
        RedisTaskStore(client),
        publisher,
        republish_after=settings.dispatch_republish_after,
        max_payload_bytes=settings.max_payload_bytes,
        max_lost_attempts=settings.max_lost_attempts,
        dead_letter_max=settings.dead_letter_max,
        partition_of=partition_of,
    )
    coordinator = CompositeCoordinator(
        RedisCompositeStore(client), view, f"scheduler:{settings.scheduler_id}"
    )
    scheduler = Scheduler(
        settings.scheduler_id,
        dispatcher,
        view,
        LeaderElection(zk, settings.scheduler_id),
        make_strategy(settings.scheduler_strategy),
        agent_backlog=settings.scheduler_agent_backlog,
        poll_timeout=settings.scheduler_poll_timeout,
        sweep_interval=settings.scheduler_sweep_interval,
        housekeeping=[retention_of(client, settings).maybe_sweep],
        coordinator=coordinator,
        firer=firer_of(client, settings),
    )
    return scheduler, publisher


def run_scheduler(settings: Settings) -> None:
    bus = connect_bus(settings)
    try:
        scheduler, publisher = build_scheduler(settings, bus)
    except CoordinationUnavailable as exc:
        sys.exit(f"error: {exc}")
    # The operator port (if served): the scheduler's own checks first (not ready before it
    # sees ZooKeeper and a leader), then the queues' state and Redis.
    observe_scheduler(scheduler)
    observe_redis(settings.redis_url)
    signal.signal(signal.SIGTERM, lambda *_: scheduler.stop())
    signal.signal(signal.SIGINT, lambda *_: scheduler.stop())
    try:
        scheduler.run_forever()
    finally:
        publisher.close()
        close_zk(settings)


# -- agent -------------------------------------------------------------------------------------
# --8<-- [start:build-agent]
def build_agent(settings: Settings, bus: Bus) -> tuple[Agent, AgentRegistry]:
    client = redis_client(settings.redis_url)
    agent_id = settings.agent_id
    executors = executors_for(settings)
    failover = RedisFailover(client, settings.max_lost_attempts)

    def recover() -> int:
        # What a previous run of this id left, running first, then not yet started: one reap
        # of both lists, as a stage 2 agent's, so its incarnation is bumped once.
        lists = [keys.processing(agent_id), keys.agent_tasks(agent_id)]
        return failover.reap(agent_id, lists, keys.PENDING_QUEUE, agent_id, "own").requeued

    publisher = EventPublisher(bus, client_id=f"agent-{agent_id}")
    zk = get_zk(settings)
    intake = KafkaDispatchIntake(
        agent_id,
        bus,
        DispatchLedger(client),
        publisher,
        recover,
        # The agent claims a dispatch partition in ZooKeeper before it registers, and its node
        # names it: the scheduler produces its dispatches there.
        claim=lambda order: claim_partition(zk, agent_id, order),
        announced=lambda: announced_partitions(zk),
        on_partition=lambda partition: registry.announce_dispatch_partition(partition),
    )
    agent = Agent(
        agent_id,
        intake,
        KafkaEventSink(agent_id, publisher, intake, max_log_lines=settings.max_log_lines),
        RedisControl(client),
        executors,
        **agent_options(settings),
    )
    info = AgentInfo(
        agent_id=agent_id,
        capacity=settings.agent_capacity,
        task_types=[t.value for t in executors.supported()],
    )
    registry = AgentRegistry(zk, info, agent.paused)
    # A new session lost the old one's claim: take the partition back (or share it).
    registry.on_reregistered = lambda: reclaim_partition(zk, agent_id, intake.partition or 0)
    agent.on_load_change = ThrottledLoad(registry.report_load)
    return agent, registry


# --8<-- [end:build-agent]


def run_agent(settings: Settings) -> None:
    bus = connect_bus(settings)
    try:
        agent, registry = build_agent(settings, bus)
    except CoordinationUnavailable as exc:
        sys.exit(f"error: {exc}")

    run_registered_agent(agent, registry, settings)


# -- manager -----------------------------------------------------------------------------------
def build_manager(settings: Settings, bus: Bus) -> tuple[TaskEventManager, AtLeastOnceConsumer]:
    client = redis_client(settings.redis_url)
    store = RedisTaskStore(client)
    monitor = HeartbeatMonitor(settings.manager_heartbeat_timeout)
    # Each manager judges only the heartbeat partitions it owns, told by its consumer's
    # rebalance callbacks: a partition that moved to another manager is not silence.
    rebalances = RebalanceFeed(monitor, bus.topic(HEARTBEAT))
    manager = TaskEventManager(
        settings.manager_id,
        client,
        store,
        RedisOutcomeWriter(
            client,
            store,
            ExponentialBackoff(settings.retry_backoff_base, settings.retry_backoff_max),
        ),
        RedisDispatcher(
            client,
            store,
            settings.max_payload_bytes,
            max_lost_attempts=settings.max_lost_attempts,
            dead_letter_max=settings.dead_letter_max,
        ),
        monitor,
        heartbeat_ttl=settings.heartbeat_ttl,
        log_wait=settings.manager_log_wait,
    )
    publisher = EventPublisher(bus, client_id=f"manager-{settings.manager_id}")
    consumer = AtLeastOnceConsumer(
        bus,
        MANAGER_GROUP,
        f"manager-{settings.manager_id}",
        {STATUS: manager.on_status, LOGS: manager.on_log, HEARTBEAT: manager.on_heartbeat},
        DeadLetters(publisher, bus.group(MANAGER_GROUP)),
        # Status events read together are applied together: a few Redis round trips for the
        # lot instead of several per event, each event still settled on its own.
        batch_handlers={STATUS: manager.on_status_batch},
        # Offsets are committed only once their effects are durable in Redis.
        durability=RedisDurability(client),
        on_assign=rebalances.assigned,
        on_revoke=rebalances.revoked,
        # Static membership: a manager restarted under the same id (kill -9, then up again)
        # takes its partitions back at once, instead of the group waiting for the dead
        # member's session to time out before anyone reads them. The price: a manager that
        # stops for good keeps its partitions unread for session.timeout.ms, and two
        # managers must never share an id (the second fences the first).
        **{"group.instance.id": f"manager-{settings.manager_id}", "session.timeout.ms": 10_000},
    )
    return manager, consumer


def run_manager(settings: Settings) -> None:
    bus = connect_bus(settings)
    manager, consumer = build_manager(settings, bus)
    # Operator port (if served): the queues' state, Redis and the broker as readiness checks.
    observe_redis(settings.redis_url)
    observe_consumer(consumer)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    log.info(
        "manager %s started: group %s, failing over agents silent for %.1fs",
        settings.manager_id,
        bus.group(MANAGER_GROUP),
        settings.manager_heartbeat_timeout,
    )
    try:
        # Logs, once, what a Redis crash right after an offset commit can cost; if Redis does
        # not answer yet, that line comes with the first commit instead.
        consumer.durability.detect()
    except RedisError as exc:
        log.warning("Redis not reachable at start-up (%s); reading anyway", exc)
    try:
        consumer.run(stopping, tick=manager.check_heartbeats)
    finally:
        consumer.dead_letters.publisher.close()
        log.info("manager %s stopped after %d message(s)", settings.manager_id, consumer.handled)


def run_guarantee_checker(settings: Settings) -> None:
    # Stage 5's checker, runnable from this stage on (not in the default topology: start it
    # with `tasklab run checker`). Elected on /checker-leader, agents live per ZooKeeper; the
    # dead letters of the Kafka topic are counted beside the Redis list's.
    review = KafkaDeadLetterReview(connect_bus(settings))
    try:
        run_checker(settings, coordinated=True, dead_letter_sources={"kafka": review.unseen})
    finally:
        review.close()


STAGE = StageSpec(
    number=3,
    title="Kafka event bus: dispatch, status, heartbeats and logs; manager service",
    roles={
        "scheduler": run_scheduler,
        "agent": run_agent,
        "manager": run_manager,
        "checker": run_guarantee_checker,
    },
    services=("redis", "zookeeper", "kafka"),
    topology=(("scheduler", 2), ("agent", 3), ("manager", 1)),
)
