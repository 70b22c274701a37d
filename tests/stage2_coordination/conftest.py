"""Stage 2 fixtures: a real Redis and ZooKeeper per test (own chroot, empty database), the
stage's roles as real processes, and a few probes a test reads its facts from."""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, SessionExpiredError

from common import keys
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.coordination.paths import LIVE_AGENTS, SCHEDULER_LEADER
from common.testing.probe import TaskFacts

pytestmark = pytest.mark.integration

SESSION_TIMEOUT = 3.0  # config/test.toml zk_session_timeout


@pytest.fixture
def zk_hosts(zookeeper_service) -> str:
    return zookeeper_service.env["TASKLAB_ZK_HOSTS"]


@pytest.fixture
def stage2_env(redis_url: str, zk_hosts: str, zk_chroot: str) -> dict[str, str]:
    return {
        "TASKLAB_REDIS_URL": redis_url,
        "TASKLAB_ZK_HOSTS": zk_hosts,
        "TASKLAB_ZK_CHROOT": zk_chroot,
        "TASKLAB_ZK_SESSION_TIMEOUT": str(SESSION_TIMEOUT),
    }


@pytest.fixture
def scheduler(start_role, stage2_env):
    """scheduler(name, strategy=...) starts `tasklab run scheduler --stage 2`."""

    def start(name: str, **settings: object):
        env = {
            **stage2_env,
            "TASKLAB_SCHEDULER_ID": name,
            **{f"TASKLAB_{k.upper()}": str(v) for k, v in settings.items()},
        }
        return start_role("scheduler", 2, env, name=name)

    return start


@pytest.fixture
def agent(start_role, stage2_env):
    """agent(name, capacity=1, ...) starts `tasklab run agent --stage 2`."""

    starts: Counter[str] = Counter()

    def start(name: str, capacity: int = 1, **settings: object):
        env = {
            **stage2_env,
            "TASKLAB_AGENT_ID": name,
            "TASKLAB_AGENT_CAPACITY": str(capacity),
            **{f"TASKLAB_{k.upper()}": str(v) for k, v in settings.items()},
        }
        # A restart under the same id gets its own log file, so each incarnation's is its own.
        starts[name] += 1
        suffix = f"-run{starts[name]}" if starts[name] > 1 else ""
        return start_role("agent", 2, env, name=name + suffix)

    return start


@pytest.fixture
def tasks(redis_client) -> TaskClient:
    return TaskClient(RedisTaskStore(redis_client))


class Probe(TaskFacts):
    """What a stage 2 test reads: live agents, the leader, the fence, task runs."""

    def __init__(self, zk: KazooClient, redis_client, tasks: TaskClient, runs_file: Path):
        super().__init__(redis_client, tasks)
        self.zk = zk
        self.runs_file = runs_file

    def live_agents(self) -> list[str]:
        try:
            return sorted(self.zk.get_children(LIVE_AGENTS))
        except (ConnectionLoss, SessionExpiredError) as exc:
            # The probe's own session, not the platform's: across a ZooKeeper restart it may
            # expire too. kazoo opens a new one; for `eventually` this is "not yet".
            raise AssertionError(f"the probe's ZooKeeper session: {type(exc).__name__}") from exc

    def agent_data(self, agent_id: str) -> dict:
        data, _ = self.zk.get(f"{LIVE_AGENTS}/{agent_id}")
        return json.loads(data)

    def leader(self) -> str | None:
        if not self.zk.exists(SCHEDULER_LEADER):
            return None
        contenders = self.zk.Lock(SCHEDULER_LEADER).contenders()
        return contenders[0] if contenders else None

    def fence(self) -> int:
        return int(self.redis.get(keys.SCHEDULER_FENCE) or 0)

    def stats(self) -> dict[str, int]:
        return self.tasks.store.stats()

    def counting_payload(self, label: str, extra: str = "") -> str:
        """A shell payload that appends its label to the runs file each time it runs."""
        line = f"echo {shlex.quote(label)} >> {shlex.quote(str(self.runs_file))}"
        return f"{line}{'; ' + extra if extra else ''}"

    def runs(self) -> Counter[str]:
        if not self.runs_file.exists():
            return Counter()
        return Counter(self.runs_file.read_text().split())

    def submit_counted(self, n: int, prefix: str = "t", extra: str = "") -> dict[str, str]:
        """Submit n counted tasks; returns label -> taskId."""
        out = {}
        for i in range(n):
            label = f"{prefix}{i}"
            task, _ = self.tasks.submit(
                {"taskType": "SHELL", "payload": self.counting_payload(label, extra)}
            )
            out[label] = task.task_id
        return out

    @staticmethod
    def log_lines(proc, pattern: str) -> list[str]:
        return [line for line in proc.log_text().splitlines() if re.search(pattern, line)]


@pytest.fixture
def probe(zk, redis_client, tasks, tmp_path) -> Probe:
    return Probe(zk, redis_client, tasks, tmp_path / "runs.log")
