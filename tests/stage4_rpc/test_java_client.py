"""The Java client (clients/java) calling the Python providers: cross-language RPC from one
.proto, with the providers found in ZooKeeper.

The jar is built here when it is missing or older than its pom, its sources or the .proto
(`make setup` normally built it already). It runs as a real process against the module's
platform, and a provider is killed -9 by PID to show its failover.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from kazoo.exceptions import NoNodeError
from rpc_support import free_port

from common import keys
from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.domain.task import TaskSpec, TaskType
from common.rpc.gen import task_service_pb2 as pb
from common.rpc.registry import TASK_SERVICE
from common.testing import eventually
from common.testing.pytest_plugin import unavailable

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "java"
JAR = CLIENT / "target" / "tasklab-client.jar"
PROTO = ROOT / "proto" / "tasklab" / "v1" / "task_service.proto"
# `[3] 21:40:01.123  DISPATCHED -> RUNNING  attempt 1  epoch 7  by agent-1`: the new state.
TRANSITION = re.compile(r"^\[\d+\] \S+  (?:\w+ -> )?(\w+)  attempt ")


@pytest.fixture(scope="module", autouse=True)
def jdk_and_maven() -> None:
    # As every service fixture: skipped on a machine without them, a failure under CI.
    if shutil.which("java") is None or shutil.which("mvn") is None:
        unavailable("the Java client needs a JDK (java) and Maven (mvn): `make system-deps`")


def _inputs() -> list[Path]:
    return [CLIENT / "pom.xml", PROTO, *(CLIENT / "src").rglob("*")]


@pytest.fixture(scope="module")
def jar() -> Path:
    built = JAR.stat().st_mtime if JAR.exists() else 0.0
    if any(p.stat().st_mtime > built for p in _inputs() if p.is_file()):
        # Not offline: on a cold ~/.m2 this is where the dependencies arrive.
        result = subprocess.run(
            ["mvn", "-B", "-q", "-f", str(CLIENT / "pom.xml"), "package", "-DskipTests"],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert JAR.exists()
    return JAR


def _command(jar: Path, stage4, args: tuple[str, ...], chroot: str = "") -> list[str]:
    """The jar as a user runs it: ZooKeeper and the chroot on the command line."""
    where = ["--zk", stage4.env["TASKLAB_ZK_HOSTS"]]
    where += ["--chroot", chroot or stage4.env["TASKLAB_ZK_CHROOT"]]
    return ["java", "-jar", str(jar), *where, *args]


def _env() -> dict[str, str]:
    # No TASKLAB_* from the caller's environment: the flags alone say where to look.
    return {k: v for k, v in os.environ.items() if not k.startswith("TASKLAB_")}


def run_client(
    jar: Path, stage4, *args: str, chroot: str = "", timeout: float = 90
) -> subprocess.CompletedProcess:
    command = _command(jar, stage4, args, chroot)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env())


class JavaClient:
    """The jar running in the background, its output read as it comes."""

    def __init__(self, jar: Path, stage4, *args: str) -> None:
        self.proc = subprocess.Popen(
            _command(jar, stage4, args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _drain(stream, lines: list[str]) -> None:
        for line in stream:  # ends at EOF, when the process exits
            lines.append(line)

    def stdout(self) -> str:
        return "".join(self._out)

    def stderr(self) -> str:
        return "".join(self._err)

    def result(self, timeout: float) -> tuple[int, str, str]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by its handle
            self.proc.wait(10)
            raise
        for reader in self._readers:
            reader.join(10)
        return code, "".join(self._out), "".join(self._err)


def start_provider(stage4, name: str, session_timeout: float) -> str:
    address = f"127.0.0.1:{free_port()}"
    stage4.providers[address] = stage4.start(
        "rpc",
        name,
        TASKLAB_RPC_ADDRESS=address,
        TASKLAB_ZK_SESSION_TIMEOUT=str(session_timeout),
    )
    eventually(
        lambda: address in stage4.zk.get_children(TASK_SERVICE),
        20,
        message=f"provider {name} registered as {address}",
    )
    return address


@pytest.fixture
def pair(stage4):
    """Two providers whose ZooKeeper session (10 s, the test profile's is 3 s) outlasts the
    JVM's start: the client must meet a killed provider's node, not find it already gone."""
    tag = uuid.uuid4().hex[:4]
    addresses = sorted(start_provider(stage4, f"rpc-java-{tag}-{n}", 10.0) for n in "ab")
    # The tests count on the order of attempts (round robin over these two, in address order):
    # no other provider may be registered.
    assert sorted(stage4.zk.get_children(TASK_SERVICE)) == addresses
    yield addresses
    for address in addresses:
        stage4.providers[address].stop()
    # A provider killed by the test leaves its node for a session timeout (10 s), which the
    # next test must not meet. Both processes have exited and one that stopped cleanly took its
    # node with it: what is left is a dead session's, deleted here as its expiry would.
    for address in set(addresses) & set(stage4.zk.get_children(TASK_SERVICE)):
        try:
            stage4.zk.delete(f"{TASK_SERVICE}/{address}")
        except NoNodeError:
            pass  # the session ended meanwhile
    eventually(
        lambda: not set(addresses) & set(stage4.zk.get_children(TASK_SERVICE)),
        20,
        message="the providers' nodes gone",
    )


def stored(proxy, name: str) -> list[pb.Task]:
    return list(proxy.list(pb.ListRequest(name=name, page_size=50)).tasks)


def test_the_java_client_submits_to_the_python_providers_and_watches_the_task_to_success(
    stage4, proxy, pair, jar
):
    marker = f"hello-from-java-{uuid.uuid4().hex[:6]}"
    result = run_client(
        jar, stage4, "submit", "--type", "SHELL", "--payload", f"echo {marker}", "--wait"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.splitlines()
    assert f"log | {marker}" in out, "the log line streamed by Watch"
    assert "status:   SUCCESS" in out and f"  {marker}" in out, "the final task and its result"
    transitions = [m[1] for line in out if (m := TRANSITION.match(line))]
    assert transitions[0] == "PENDING" and transitions[-1] == "SUCCESS", out
    assert "RUNNING" in transitions
    # The Python side stored what the Java side sent, with the request id the client added.
    (task,) = stored(proxy, f"echo {marker}")
    assert task.status == pb.SUCCESS and task.request_id, task
    assert out[0].startswith(f"submitted {task.task_id} (PENDING) via ")
    assert out[0].rsplit(" ", 1)[1] in pair


def test_the_java_client_submits_a_shards_composite_and_reads_its_tree(stage4, proxy, pair, jar):
    name = f"java-shards-{uuid.uuid4().hex[:6]}"
    payload = "echo shard $TASKLAB_SHARD_INDEX"
    args = ("submit", "--shards", "3", "--parallelism", "2", "--name", name)
    result = run_client(jar, stage4, *args, "--payload", payload, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.splitlines()
    assert "type:     COMPOSITE" in out and "status:   SUCCESS" in out, out
    parent_id = out[0].split()[1]
    tree = proxy.get_task_info(parent_id).task
    assert tree.task_name == name and tree.request_id, "the client added a request id"
    assert [c.status for c in tree.children] == [pb.SUCCESS] * 3
    results = [proxy.get_task_info(c.task_id).task.result for c in tree.children]
    assert results == [f"shard {i}\n" for i in range(3)]
    shown = run_client(jar, stage4, "get", parent_id)
    assert shown.returncode == 0, shown.stderr
    rows = [
        line.split()
        for line in shown.stdout.splitlines()
        if line.endswith(tuple(c.task_id for c in tree.children))
    ]
    assert [(r[0], r[1], r[2]) for r in rows] == [(str(i), "shard", "SUCCESS") for i in range(3)]


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_java_client_shows_a_runs_schedule_and_fire_time_and_a_traced_tasks_trace(
    stage4, pair, jar
):
    # Given a traced task written as the leader's fire writes a run (the same task hash, with
    # the schedule's name and the fire time it belongs to), and a plain task beside it
    store = RedisTaskStore(redis_client(stage4.env["TASKLAB_REDIS_URL"]))
    spec = TaskSpec(task_type=TaskType.SHELL, payload="echo a run")
    run, _ = store.submit(spec, traceparent=TRACEPARENT)
    fire = datetime.fromisoformat("2026-11-29T21:40:00+00:00").timestamp()
    store.client.hset(
        keys.task(run.task_id), mapping={"scheduleId": "java-views", "scheduledFor": repr(fire)}
    )
    plain, _ = store.submit(spec)
    # When the Java client reads each
    shown = run_client(jar, stage4, "get", run.task_id)
    bare = run_client(jar, stage4, "get", plain.task_id)
    # Then the run shows its schedule, fire time (UTC, to the second) and trace, as
    # `tasklab status` prints them
    assert shown.returncode == 0, shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    assert "schedule: java-views (fired for 2026-11-29 21:40:00 UTC)" in lines, lines
    assert f"traceId:  {TRACEPARENT.split('-')[1]}" in lines, lines
    # and a task with none of them shows no such lines
    assert bare.returncode == 0, bare.stdout + bare.stderr
    assert not [
        line for line in bare.stdout.splitlines() if line.startswith(("schedule:", "traceId:"))
    ], bare.stdout


@pytest.mark.slow
def test_the_java_client_fails_over_from_a_provider_killed_before_the_call_and_drops_its_node(
    stage4, proxy, pair, jar, tmp_path
):
    # Round robin starts at the first address in order: the dead one gets the first attempt.
    dead, alive = pair
    stage4.providers[dead].kill()
    assert dead in stage4.zk.get_children(TASK_SERVICE), "its node outlives it (session)"
    marker = f"failover-{uuid.uuid4().hex[:6]}"
    # The task holds the Watch open until the test lets it finish (bounded: 40 s at most), so
    # the client is still running when the dead provider's session expires.
    release = tmp_path / "release"
    payload = f"for i in $(seq 1 400); do [ -e {release} ] && break; sleep 0.1; done; echo {marker}"
    client = JavaClient(
        jar,
        stage4,
        "submit",
        "--name",
        marker,
        "--payload",
        payload,
        "--execution-timeout",
        "120",
        "--wait",
    )
    try:
        eventually(
            lambda: f"TaskService providers left: {dead}" in client.stderr(),
            30,
            message="the client saw the dead provider's node vanish (its session expired)",
        )
    finally:
        release.touch()
    code, out, err = client.result(60)
    assert code == 0, out + err
    assert f"provider {dead} unavailable" in err, "the dead provider was tried first"
    assert f"via {alive}" in out.splitlines()[0], "and the submit went to the live one"
    assert "status:   SUCCESS" in out.splitlines() and f"  {marker}" in out.splitlines()
    assert len(stored(proxy, marker)) == 1, "submitted once"


@pytest.mark.slow
def test_a_java_watch_whose_provider_is_killed_mid_stream_resumes_without_gaps_or_repeats(
    stage4, pair, jar, tmp_path
):
    # One run of the CLI sends its Submit to the first provider and its Watch to the next.
    submit_to, watch_on = pair
    release = tmp_path / "release"
    wait = f"for i in $(seq 1 400); do [ -e {release} ] && break; sleep 0.1; done"
    payload = f"seq -f line-%g 1 5; {wait}; seq -f line-%g 6 10"
    client = JavaClient(
        jar, stage4, "submit", "--payload", payload, "--execution-timeout", "120", "--wait"
    )
    try:
        eventually(lambda: "log | line-5" in client.stdout(), 30, message="half the log watched")
        stage4.providers[watch_on].kill()
    finally:
        release.touch()
    code, out, err = client.result(60)
    assert code == 0, out + err
    assert f"via {submit_to}" in out.splitlines()[0]
    assert f"provider {watch_on} unavailable" in err, "the stream broke and moved provider"
    lines = out.splitlines()
    logs = [line.removeprefix("log | ") for line in lines if line.startswith("log | ")]
    assert logs == [f"line-{i}" for i in range(1, 11)], "every line once, in order"
    sequences = [int(line[1 : line.index("]")]) for line in lines if TRANSITION.match(line)]
    assert sequences == [0, 1, 2, 3, 4], "every transition once"
    assert "status:   SUCCESS" in lines


def test_the_java_client_says_in_one_line_that_no_provider_is_registered(stage4, jar):
    empty = f"{stage4.env['TASKLAB_ZK_CHROOT']}-empty"
    result = run_client(
        jar, stage4, "--timeout", "1", "submit", "--payload", "echo never", chroot=empty
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: UNAVAILABLE: no TaskService provider registered under "
        f"{stage4.env['TASKLAB_ZK_HOSTS']}{empty}{TASK_SERVICE}"
    ]


def test_the_java_client_reports_bad_input_from_a_provider_in_one_line_with_exit_code_2(
    stage4, pair, jar
):
    result = run_client(jar, stage4, "submit", "--type", "SHELL", "--payload", "")
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: INVALID_ARGUMENT: ") and "payload" in line, line
