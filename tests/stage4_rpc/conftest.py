"""Stage 4 fixtures: the stage 3 platform started once per test module (its roles take
seconds to start), TaskService providers as real `tasklab run rpc --stage 4` processes on
ports the test chooses (so a test knows which process serves which address), and the client
proxy discovering them in the module's own ZooKeeper chroot.

Each module gets its own Redis database, ZooKeeper chroot and Kafka namespace, so modules
share the session's services without seeing each other, and no per-test flush of another
fixture touches this module's platform.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from kazoo.client import KazooClient
from rpc_support import free_port, wait_for_api

from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.rpc.proxy import TaskServiceProxy
from common.rpc.registry import TASK_SERVICE
from common.testing import eventually
from common.testing.platforms import stage4_environment
from common.testing.processes import RoleProcess, stop_all

pytestmark = pytest.mark.integration

# The platform under the front door, smaller than the stage's topology to spare two cores.
# A module may declare its own PLATFORM_ROLES (one that starts its agents itself, say).
PLATFORM_ROLES = (("scheduler", 1), ("agent", 2), ("manager", 1))
STAGE4_DB = 4  # other suites flush database 0 per test; this module's platform lives on


@dataclass
class Stage4:
    env: dict[str, str]
    log_dir: Path
    tasks: TaskClient
    zk: KazooClient
    processes: list[RoleProcess] = field(default_factory=list)
    providers: dict[str, RoleProcess] = field(default_factory=dict)

    def start(self, role: str, name: str, **extra: str) -> RoleProcess:
        env = {
            **self.env,
            "TASKLAB_AGENT_ID": name,
            "TASKLAB_SCHEDULER_ID": name,
            "TASKLAB_MANAGER_ID": name,
            **extra,
        }
        proc = RoleProcess(role, 4, env, self.log_dir, name=name).start()
        self.processes.append(proc)
        return proc

    def start_provider(self, name: str, **extra: str) -> str:
        """A provider on a port chosen here; returns its address once it is registered.
        `extra` is more environment (e.g. TASKLAB_API_KEYS: auth is off unless a test says)."""
        address = f"127.0.0.1:{free_port()}"
        self.providers[address] = self.start("rpc", name, TASKLAB_RPC_ADDRESS=address, **extra)
        eventually(
            lambda: address in self.zk.get_children(TASK_SERVICE),
            20,
            message=f"provider {name} registered as {address}",
        )
        return address

    def start_api(self, name: str, **extra: str) -> str:
        """`tasklab run api --stage 4` on a port chosen here; its base URL once it answers."""
        address = f"127.0.0.1:{free_port()}"
        proc = self.start("api", name, TASKLAB_API_ADDRESS=address, **extra)
        url = f"http://{address}"
        wait_for_api(proc, url)
        return url

    def stop_all(self) -> None:
        stop_all(self.processes)
        for proc in self.processes:
            text = proc.log_text()
            if text:
                print(f"\n----- {proc.name} (pid {proc.pid}) -----\n{text[-3000:]}")


@pytest.fixture(scope="module")
def stage4(
    request, redis_service, zookeeper_service, kafka_service, tmp_path_factory
) -> Iterator[Stage4]:
    url = redis_service.env["TASKLAB_REDIS_URL"].rsplit("/", 1)[0] + f"/{STAGE4_DB}"
    client = redis_client(url)
    client.flushdb()
    env, zk = stage4_environment(url, zookeeper_service, kafka_service, "s4")
    log_dir = tmp_path_factory.mktemp("stage4-roles")
    platform = Stage4(env, log_dir, TaskClient(RedisTaskStore(client)), zk)
    try:
        for role, count in getattr(request.module, "PLATFORM_ROLES", PLATFORM_ROLES):
            for n in range(count):
                platform.start(role, f"{role}-{n + 1}")
        yield platform
    finally:
        platform.stop_all()
        zk.stop()
        zk.close()


@pytest.fixture(scope="module")
def rest(stage4: Stage4) -> str:
    """The REST API (a real `tasklab run api` process) over two providers: its base URL."""
    stage4.start_provider("rpc-rest-a")
    stage4.start_provider("rpc-rest-b")
    return stage4.start_api("api-1")


@pytest.fixture(scope="module")
def http(rest: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=rest, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def proxy(stage4: Stage4) -> Iterator[TaskServiceProxy]:
    proxy = TaskServiceProxy(stage4.zk, default_timeout=20.0).start()
    yield proxy
    proxy.close()
