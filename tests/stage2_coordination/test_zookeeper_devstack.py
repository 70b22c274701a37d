"""The native ZooKeeper of the dev stack behaves like the ZooKeeper stage 2 relies on.

Stage 2 detects dead agents through ephemeral znodes and short sessions, and must ride out a
ZooKeeper restart. These tests pin down exactly those server behaviours against a real server,
so a later failure in an agent or scheduler test can be blamed on tasklab, not on the stack.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient, KazooState

from common.devstack.base import RunningService, ServiceUnavailable, pid_alive, port_open
from common.devstack.zookeeper import ZooKeeperService, four_letter_word
from common.testing.pytest_plugin import unavailable

pytestmark = pytest.mark.integration

# Fast reconnects: kazoo's default backoff grows quickly, and a test that restarts the server
# should see the client come back within a second of the server being ready.
FAST_RECONNECT = {"max_tries": -1, "delay": 0.05, "backoff": 1.5, "max_delay": 0.5}


class ZooKeeperUnderTest:
    """One native server plus the RunningService that describes it right now.

    `restart` replaces the RunningService (the PID changes), so the fixture keeps this holder
    and stops whatever the latest process is.
    """

    def __init__(self, service: ZooKeeperService, running: RunningService) -> None:
        self.service = service
        self.running = running

    @property
    def hosts(self) -> str:
        return self.running.env["TASKLAB_ZK_HOSTS"]

    def restart(self) -> None:
        self.running = self.service.restart(self.running)

    def client(self, timeout: float = 10.0) -> KazooClient:
        client = KazooClient(
            hosts=self.hosts, timeout=timeout, connection_retry=dict(FAST_RECONNECT)
        )
        client.start(timeout=10)
        return client


@pytest.fixture
def zookeeper(tmp_path: Path) -> Iterator[ZooKeeperUnderTest]:
    service = ZooKeeperService(tick_time_ms=200)
    try:
        running = service.start(tmp_path)
    except ServiceUnavailable as exc:
        unavailable(f"ZooKeeper unavailable: {exc}")  # skip locally, fail under CI
    under_test = ZooKeeperUnderTest(service, running)
    try:
        yield under_test
    finally:
        service.stop(under_test.running)


def stop_client(client: KazooClient) -> None:
    client.stop()
    client.close()


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def granted_session_timeouts_ms(zk: ZooKeeperUnderTest) -> list[int]:
    """Timeouts the server negotiated for its current sessions, from the `cons` command."""
    reply = four_letter_word(zk.running.host, zk.running.port, "cons")
    return [int(ms) for ms in re.findall(r"\bto=(\d+)", reply)]


def test_native_zookeeper_reports_itself_standalone_and_exports_its_loopback_address(
    zookeeper: ZooKeeperUnderTest,
):
    running = zookeeper.running
    assert running.env == {"TASKLAB_ZK_HOSTS": f"127.0.0.1:{running.port}"}
    assert "Mode: standalone" in four_letter_word(running.host, running.port, "srvr")
    assert four_letter_word(running.host, running.port, "ruok") == "imok"
    # Config, data and logs all live in the throw-away service dir.
    workdir = Path(running.workdir)
    assert (workdir / "zoo.cfg").exists()
    assert (workdir / "data" / "version-2").is_dir()
    assert "binding to port" in Path(running.log).read_text()


def test_native_zookeeper_accepts_a_kazoo_session_and_ephemeral_node_disappears_when_session_closes(
    zookeeper: ZooKeeperUnderTest,
):
    owner = zookeeper.client()
    observer = zookeeper.client()
    try:
        owner.create(
            "/live-agents/agent-1", b'{"agentId": "agent-1"}', ephemeral=True, makepath=True
        )
        assert observer.exists("/live-agents/agent-1") is not None

        # A clean close ends the session at once: this is the "agent shut down politely" path,
        # which must not wait for a session timeout.
        gone = threading.Event()
        observer.exists("/live-agents/agent-1", watch=lambda event: gone.set())
        stop_client(owner)
        assert gone.wait(timeout=2.0)
        assert observer.exists("/live-agents/agent-1") is None
        assert observer.exists("/live-agents") is not None
    finally:
        stop_client(owner)
        stop_client(observer)


def test_native_zookeeper_grants_both_two_second_test_sessions_and_thirty_second_run_sessions(
    zookeeper: ZooKeeperUnderTest,
):
    # ZooKeeper silently clamps a requested timeout into [2, 20] ticks unless configured
    # otherwise; a clamp would make failure-detection tests lie about their timing.
    short = zookeeper.client(timeout=2.0)
    long = zookeeper.client(timeout=30.0)
    try:
        assert sorted(granted_session_timeouts_ms(zookeeper)) == [2000, 30000]
    finally:
        stop_client(short)
        stop_client(long)


def test_native_zookeeper_expires_the_two_second_session_of_a_killed_client_and_drops_its_node(
    zookeeper: ZooKeeperUnderTest,
):
    # A separate process that dies without closing its session: the way a crashed agent
    # looks to ZooKeeper. Only the session timeout can remove its ephemeral node.
    holder_script = textwrap.dedent(
        f"""
        import time
        from kazoo.client import KazooClient
        client = KazooClient(hosts={zookeeper.hosts!r}, timeout=2.0)
        client.start(timeout=10)
        client.create("/live-agents/doomed", b"", ephemeral=True, makepath=True)
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_script], stdout=subprocess.PIPE, text=True
    )
    observer = zookeeper.client()
    try:
        assert holder.stdout.readline().strip() == "ready"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=5)
        killed_at = time.monotonic()
        # Right after the crash the node is still there: ZooKeeper cannot tell a dead client
        # from a slow one until the session timeout has passed without a heartbeat.
        assert observer.exists("/live-agents/doomed") is not None
        assert wait_until(lambda: observer.exists("/live-agents/doomed") is None, timeout=8.0)
        elapsed = time.monotonic() - killed_at
        # Expiry comes between (timeout - one ping interval) and (timeout + a tick), plus slack
        # for a loaded machine; a clamped or default 10 s session would blow the upper bound.
        assert 1.0 <= elapsed <= 5.0, elapsed
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=5)
        holder.stdout.close()
        stop_client(observer)


def test_native_zookeeper_restarts_on_the_same_port_and_keeps_persistent_data(
    zookeeper: ZooKeeperUnderTest,
):
    writer = zookeeper.client()
    try:
        writer.create("/tasklab/config", b"epoch=7", makepath=True)
    finally:
        stop_client(writer)

    before = zookeeper.running
    zookeeper.restart()
    after = zookeeper.running

    assert after.port == before.port
    assert after.workdir == before.workdir
    assert after.pid != before.pid
    assert not pid_alive(before.pid)
    assert port_open(after.host, after.port)

    reader = zookeeper.client()
    try:
        data, _ = reader.get("/tasklab/config")
        assert data == b"epoch=7"
    finally:
        stop_client(reader)


def test_a_kazoo_session_survives_a_quick_zookeeper_restart_and_keeps_its_ephemeral_node(
    zookeeper: ZooKeeperUnderTest,
):
    client = zookeeper.client(timeout=10.0)
    states: list[str] = []
    client.add_listener(states.append)
    try:
        client.create("/live-agents/agent-1", b"", ephemeral=True, makepath=True)
        session_id = client.client_id[0]

        zookeeper.restart()

        # The session was in the transaction log, so the restarted server resumes it and the
        # client only sees SUSPENDED then CONNECTED, never LOST. Agents must treat SUSPENDED as
        # "stop taking work", yet keep their identity afterwards.
        assert wait_until(
            lambda: client.state == KazooState.CONNECTED and KazooState.SUSPENDED in states,
            timeout=10.0,
        ), states
        assert KazooState.LOST not in states
        assert client.client_id[0] == session_id
        assert client.exists("/live-agents/agent-1") is not None
    finally:
        stop_client(client)
