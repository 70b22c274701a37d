"""A stage 4 platform of a test module's own, on the session's services, and its roles.

Several suites start the stage 4 roles themselves (the REST API tests, the console's browser
tests): each needs the same environment, a ZooKeeper chroot and a Kafka topic namespace of its
own, its topics created before any role starts, and the providers' registry path made, so a
proxy can watch it before the first provider registers.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from kazoo.client import KazooClient

from common.messaging.topics import ensure_topics
from common.rpc.registry import TASK_SERVICE
from common.testing import eventually
from common.testing.processes import RoleProcess, stop_all

if TYPE_CHECKING:
    from common.testing.pytest_plugin import ServiceHandle


def stage4_environment(
    redis_url: str, zookeeper: ServiceHandle, kafka: ServiceHandle, label: str
) -> tuple[dict[str, str], KazooClient]:
    """The TASKLAB_* settings of a new platform, and a started ZooKeeper client on its chroot
    (the caller stops and closes it). `label` prefixes its chroot and topic namespace."""
    chroot = f"/tasklab-{label}-{uuid.uuid4().hex[:8]}"
    namespace = f"{label}{uuid.uuid4().hex[:8]}"
    env = {
        "TASKLAB_REDIS_URL": redis_url,
        **zookeeper.env,
        "TASKLAB_ZK_CHROOT": chroot,
        **kafka.env,
        "TASKLAB_KAFKA_NAMESPACE": namespace,
    }
    ensure_topics(env["TASKLAB_KAFKA_BOOTSTRAP"], namespace)
    hosts = zookeeper.env["TASKLAB_ZK_HOSTS"]
    bootstrap = KazooClient(hosts=hosts)
    bootstrap.start(timeout=10)
    try:
        bootstrap.ensure_path(chroot + TASK_SERVICE)
    finally:
        bootstrap.stop()
        bootstrap.close()
    zk = KazooClient(hosts=hosts + chroot)
    zk.start(timeout=10)
    return env, zk


def free_port() -> int:
    """A loopback port nothing listens on now (the role binding it comes next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_api(proc: RoleProcess, url: str, timeout: float = 30.0) -> None:
    """Until the API process answers /health (failing at once if it exited)."""

    def answers() -> bool:
        assert proc.alive(), f"{proc.name} exited:\n{proc.log_text()[-2000:]}"
        try:
            return httpx.get(url + "/health", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    eventually(answers, timeout, message=f"{proc.name} answers on {url}")


@dataclass
class RolePlatform:
    """Stage 4 roles as real `tasklab run` processes, on one environment: a test module starts
    the ones it needs (a provider or an API on a port chosen here, so a test knows which
    process serves which address) and stops them all at the end."""

    env: dict[str, str]
    log_dir: Path
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

    def start_provider(self, name: str, timeout: float = 30.0, **extra: str) -> str:
        """A provider on a port chosen here; returns its address once it is registered.
        `extra` is more environment (e.g. TASKLAB_API_KEYS: auth is off unless a test says)."""
        address = f"127.0.0.1:{free_port()}"
        self.providers[address] = self.start("rpc", name, TASKLAB_RPC_ADDRESS=address, **extra)
        eventually(
            lambda: address in self.zk.get_children(TASK_SERVICE),
            timeout,
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

    def stop_all(self, tail: int = 3000) -> None:
        """Stop every role started here, then print each one's log tail (pytest shows it with
        a failing test)."""
        stop_all(self.processes)
        for proc in self.processes:
            text = proc.log_text()
            if text:
                print(f"\n----- {proc.name} (pid {proc.pid}) -----\n{text[-tail:]}")
