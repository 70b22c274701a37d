"""Stage 3 fixtures: one real broker for the whole session (it takes seconds to start), with a
fresh topic namespace per test; a real Redis database and ZooKeeper chroot per test; the
stage's roles as real processes; and a `bus` a test reads its facts from and injects into."""

from __future__ import annotations

import json
import logging
import shlex
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from kazoo.client import KazooClient

from common import keys
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.coordination.agent_info import AgentInfo
from common.coordination.paths import LIVE_AGENTS, agent_node
from common.domain.task import TaskSpec, TaskType
from common.domain.transitions import TaskStatus
from common.messaging.clients import Bus
from common.messaging.schemas import Heartbeat, decode
from common.messaging.topics import DISPATCH, HEARTBEAT, ensure_topics
from common.testing import eventually
from common.testing.probe import TaskFacts

pytestmark = pytest.mark.integration

# The probes' own Kafka clients: their reconnect complaints while a test restarts the broker
# are expected, and would bury the roles' logs that a failing test prints.
QUIET = logging.getLogger("tests.stage3.kafka-probe")
QUIET.setLevel(logging.CRITICAL)


@pytest.fixture
def bus(kafka_service, kafka_namespace) -> Bus:
    bus = Bus(kafka_service.env["TASKLAB_KAFKA_BOOTSTRAP"], kafka_namespace)
    ensure_topics(bus.bootstrap, bus.namespace)
    return bus


@pytest.fixture
def stage3_env(redis_url, zookeeper_service, zk_chroot, bus) -> dict[str, str]:
    return {
        "TASKLAB_REDIS_URL": redis_url,
        "TASKLAB_ZK_CHROOT": zk_chroot,
        "TASKLAB_KAFKA_BOOTSTRAP": bus.bootstrap,
        "TASKLAB_KAFKA_NAMESPACE": bus.namespace,
        **zookeeper_service.env,
    }


@pytest.fixture
def role(start_role, stage3_env):
    """role("agent", "agent-1", agent_capacity=2) starts `tasklab run agent --stage 3`."""
    starts: Counter[str] = Counter()

    def start(kind: str, name: str, **settings: object):
        env = {
            **stage3_env,
            "TASKLAB_AGENT_ID": name,
            "TASKLAB_SCHEDULER_ID": name,
            "TASKLAB_MANAGER_ID": name,
            **{f"TASKLAB_{k.upper()}": str(v) for k, v in settings.items()},
        }
        # A restart under the same name gets its own log file.
        starts[name] += 1
        suffix = f"-run{starts[name]}" if starts[name] > 1 else ""
        return start_role(kind, 3, env, name=name + suffix)

    return start


@pytest.fixture
def tasks(redis_client) -> TaskClient:
    return TaskClient(RedisTaskStore(redis_client))


class BusProbe(TaskFacts):
    """What a stage 3 test reads and injects: topics, Redis facts, task runs."""

    def __init__(
        self, bus: Bus, redis_client, tasks: TaskClient, runs_file: Path, zk: KazooClient
    ) -> None:
        super().__init__(redis_client, tasks)
        self.bus = bus
        self.zk = zk
        self.runs_file = runs_file
        self.producer = Producer(
            {"bootstrap.servers": bus.bootstrap, "enable.idempotence": True, "logger": QUIET}
        )

    # -- injecting -----------------------------------------------------------------------
    def produce(
        self, topic: str, key: str, value: bytes | str, headers=None, partition: int | None = None
    ) -> Message:
        """Publish raw bytes to a topic of this test's namespace; returns the delivered message.
        To `partition` if given (a dispatch: the partition its agent reads), else by the key."""
        delivered: list[Message] = []
        self.producer.produce(
            self.bus.topic(topic),
            key=key,
            value=value.encode() if isinstance(value, str) else value,
            headers=headers,
            on_delivery=lambda err, msg: delivered.append(msg) if err is None else None,
            **({} if partition is None else {"partition": partition}),
        )
        assert self.producer.flush(15) == 0 and delivered, f"not delivered to {topic}"
        return delivered[0]

    # -- reading topics ------------------------------------------------------------------
    def read(self, topic: str, until, timeout: float = 15.0) -> list[Message]:
        """Read `topic` from the beginning until `until(messages)` is true (bounded)."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bus.bootstrap,
                "group.id": f"probe-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "logger": QUIET,
            }
        )
        name = self.bus.topic(topic)
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in partitions])
        got: list[Message] = []
        deadline = time.monotonic() + timeout
        try:
            while not until(got) and time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is not None and msg.error() is None:
                    got.append(msg)
        finally:
            consumer.close()
        assert until(got), f"{topic}: condition not met after {timeout:.0f}s ({len(got)} read)"
        return got

    @staticmethod
    def headers(msg: Message) -> dict[str, str]:
        return {k: v.decode() for k, v in msg.headers() or []}

    def end_offsets(self, topic: str) -> int:
        """How many messages `topic` holds (the sum of its partitions' end offsets)."""
        consumer = Consumer(
            {"bootstrap.servers": self.bus.bootstrap, "group.id": "probe-ends", "logger": QUIET}
        )
        name = self.bus.topic(topic)
        try:
            partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
            return sum(
                consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                for p in partitions
            )
        finally:
            consumer.close()

    def latest_heartbeats(self, until, timeout: float = 15.0) -> dict[str, Heartbeat]:
        """agentId -> its newest heartbeat, read until `until(that dict)` is true."""

        def newest(messages: list[Message]) -> dict[str, Heartbeat]:
            out: dict[str, Heartbeat] = {}
            for msg in messages:
                beat = decode(Heartbeat, msg.value())
                if beat.agent_id not in out or beat.seq > out[beat.agent_id].seq:
                    out[beat.agent_id] = beat
            return out

        return newest(self.read(HEARTBEAT, lambda got: until(newest(got)), timeout))

    def dispatches(self) -> int:
        return self.end_offsets(DISPATCH)

    # -- ZooKeeper ---------------------------------------------------------------------------
    def live_agents(self) -> list[str]:
        return sorted(self.zk.get_children(LIVE_AGENTS))

    def dispatch_partition(self, agent_id: str) -> int:
        """The partition of task-dispatch-topic `agent_id` reads, as its node says."""
        data, _ = self.zk.get(agent_node(agent_id))
        partition = AgentInfo.from_json(data).dispatch_partition
        assert partition is not None, f"{agent_id}'s node names no dispatch partition"
        return partition

    def wait_for_agents(self, *names: str, timeout: float = 30.0) -> None:
        eventually(
            lambda: set(names) <= set(self.live_agents()),
            timeout,
            message=f"agents {', '.join(names)} registered",
        )

    # -- Redis facts ---------------------------------------------------------------------
    def event_stats(self) -> Counter[str]:
        raw = self.redis.hgetall(keys.EVENT_STATS)
        return Counter({k.decode(): int(v) for k, v in raw.items()})

    # -- tasks that say who ran them ---------------------------------------------------------
    def counting_payload(self, label: str, extra: str = "") -> str:
        """Appends `label agentId` to the runs file each time it runs (the task inherits the
        agent's environment, so TASKLAB_AGENT_ID names the agent running it)."""
        line = (
            f'echo {shlex.quote(label)} "$TASKLAB_AGENT_ID" >> {shlex.quote(str(self.runs_file))}'
        )
        return f"{line}{'; ' + extra if extra else ''}"

    def runs(self) -> dict[str, list[str]]:
        """label -> the agents that ran it, in order."""
        out: dict[str, list[str]] = {}
        if self.runs_file.exists():
            for line in self.runs_file.read_text().splitlines():
                label, agent = line.split()
                out.setdefault(label, []).append(agent)
        return out

    def submit_counted(self, n: int, prefix: str = "t", extra: str = "") -> dict[str, str]:
        out = {}
        for i in range(n):
            label = f"{prefix}{i}"
            task, _ = self.tasks.submit(
                {"taskType": "SHELL", "payload": self.counting_payload(label, extra)}
            )
            out[label] = task.task_id
        return out

    # -- a task placed by hand, for tests that run only some roles ----------------------------
    def running_task(
        self, agent_id: str, payload: str = "true", status: TaskStatus = TaskStatus.RUNNING
    ) -> tuple[str, int]:
        """A task RUNNING (or only DISPATCHED) on `agent_id`, placed through the real
        transitions, with its ledger entry on the agent's processing list, as the agent's
        accept_dispatch.lua leaves it; returns (taskId, epoch)."""
        store = self.tasks.store
        task, _ = store.submit(TaskSpec(task_type=TaskType.SHELL, payload=payload))
        self.redis.lrem(keys.PENDING_QUEUE, 1, task.to_message())
        epoch = 1
        steps = [
            (TaskStatus.SCHEDULED, {}),
            (TaskStatus.DISPATCHED, {"agentId": agent_id}),
            (TaskStatus.RUNNING, {}),
        ]
        for to, fields in steps[: [s for s, _ in steps].index(status) + 1]:
            result = store.transition(
                task.task_id, to, attempt=1, epoch=epoch, actor="test", fields=fields
            )
            assert result.accepted, result
        entry = json.loads(task.to_message())
        entry.update(attempt=1, epoch=epoch)
        self.redis.lpush(keys.processing(agent_id), json.dumps(entry, separators=(",", ":")))
        return task.task_id, epoch


@pytest.fixture
def probe_on(redis_client, tasks, tmp_path, zk):
    """probe_on(bus): a probe on topics of another namespace (a test that made its own)."""
    made: list[BusProbe] = []

    def make(bus: Bus) -> BusProbe:
        made.append(BusProbe(bus, redis_client, tasks, tmp_path / f"runs-{bus.namespace}.log", zk))
        return made[-1]

    yield make
    for probe in made:
        probe.producer.flush(5)


@pytest.fixture
def probe(bus, redis_client, tasks, tmp_path, zk) -> BusProbe:
    probe = BusProbe(bus, redis_client, tasks, tmp_path / "runs.log", zk)
    yield probe
    probe.producer.flush(5)
