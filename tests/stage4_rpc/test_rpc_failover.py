"""Providers killed under the proxy: calls with deadline left succeed on another provider,
submit once, and a Watch resumes where it was; the registry follows providers coming and going.

Faults are injected here: kill -9 by PID (the RoleProcess of a provider the test started),
SIGSTOP to freeze one mid-call.
"""

from __future__ import annotations

import threading
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rpc_support import free_port, shell, stub

from common.rpc.errors import details_of
from common.rpc.gen import task_service_pb2 as pb
from common.rpc.proxy import TaskServiceProxy
from common.rpc.registry import TASK_SERVICE
from common.testing import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
def pair(stage4):
    """Two providers for this test, stopped when it ends (the platform lives on)."""
    tag = uuid.uuid4().hex[:4]
    addresses = [stage4.start_provider(f"rpc-{tag}-a"), stage4.start_provider(f"rpc-{tag}-b")]
    yield addresses
    for address in addresses:
        stage4.providers[address].stop()


@pytest.fixture
def fresh_proxy(stage4, pair):
    proxy = TaskServiceProxy(stage4.zk, default_timeout=20.0).start()
    eventually(lambda: set(pair) <= set(proxy.providers()), 10, message="both discovered")
    for _ in range(4):  # a connected channel to each, so a call reaches the frozen one
        proxy.list(pb.ListRequest(page_size=1))
    yield proxy
    proxy.close()


def test_a_submit_to_a_provider_killed_mid_call_succeeds_on_the_other_and_stores_one_task(
    stage4, pair, fresh_proxy
):
    victim = stage4.providers[pair[0]]
    victim.pause()  # takes the call, never answers: mid-call
    marker = f"mid-submit-{uuid.uuid4().hex[:6]}"
    answers: dict[int, pb.SubmitResponse] = {}
    failures: list[BaseException] = []

    def submit(i: int) -> None:
        try:
            answers[i] = fresh_proxy.submit(shell("true", task_name=f"{marker}-{i}"), timeout=15)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    # Round robin sends two consecutive calls to the two providers: one is frozen.
    threads = [threading.Thread(target=submit, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    eventually(lambda: len(answers) == 1, 10, message="the call to the live provider answered")
    victim.kill()
    for t in threads:
        t.join(20)
    assert not failures and len(answers) == 2, failures
    assert fresh_proxy.failovers >= 1
    stored = fresh_proxy.list(pb.ListRequest(name=marker, page_size=50)).tasks
    assert sorted(t.task_name for t in stored) == [f"{marker}-0", f"{marker}-1"], "one task each"
    assert all(a.task.request_id for a in answers.values()), "the proxy sent a requestId"


def test_a_watch_whose_provider_is_killed_resumes_on_the_other_without_gaps_or_repeats(
    stage4, pair, fresh_proxy
):
    payload = "sleep 1; for i in $(seq 1 20); do echo line-$i; sleep 0.05; done"
    task_id = fresh_proxy.submit(shell(payload)).task.task_id
    events = []
    killed = ""
    for event in fresh_proxy.watch(task_id, timeout=40):
        events.append(event)
        if not killed:
            killed = fresh_proxy.last_provider
            stage4.providers[killed].kill()
    assert killed and fresh_proxy.last_provider != killed, "the stream moved provider"
    assert fresh_proxy.failovers >= 1
    transitions = [e.sequence for e in events if e.WhichOneof("event") == "transition"]
    logs = [(e.sequence, e.log.line) for e in events if e.WhichOneof("event") == "log"]
    assert transitions == list(range(len(transitions))) and len(transitions) == 5
    assert logs == [(i, f"line-{i + 1}") for i in range(20)]
    assert events[-1].final.status == pb.SUCCESS


def test_a_killed_providers_node_vanishes_and_a_new_provider_is_found_without_a_restart(
    stage4, pair, fresh_proxy
):
    dead, alive = pair
    stage4.providers[dead].kill()
    # The calls keep working meanwhile: the dead one answers UNAVAILABLE, the other serves.
    for _ in range(3):
        fresh_proxy.list(pb.ListRequest(page_size=1), timeout=10)
    eventually(
        lambda: dead not in stage4.zk.get_children(TASK_SERVICE),
        15,
        message="the dead provider's ephemeral node expired with its session",
    )
    eventually(lambda: fresh_proxy.providers() == [alive], 5, message="the proxy dropped it")
    newcomer = stage4.start_provider(f"rpc-new-{uuid.uuid4().hex[:4]}")
    try:
        eventually(
            lambda: newcomer in fresh_proxy.providers(), 10, message="the proxy found the new one"
        )
        used = set()
        for _ in range(4):
            fresh_proxy.list(pb.ListRequest(page_size=1))
            used.add(fresh_proxy.last_provider)
        assert used == {alive, newcomer}
    finally:
        stage4.providers[newcomer].stop()


def test_a_provider_whose_redis_is_down_answers_unavailable_and_reports_not_serving(stage4):
    # A real provider pointed at a port where no Redis listens: the store is down for it.
    address = f"127.0.0.1:{free_port()}"
    name = f"rpc-noredis-{uuid.uuid4().hex[:4]}"
    proc = stage4.start(
        "rpc",
        name,
        TASKLAB_RPC_ADDRESS=address,
        TASKLAB_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    try:
        eventually(lambda: address in stage4.zk.get_children(TASK_SERVICE), 20, message=name)
        with pytest.raises(grpc.RpcError) as err:
            stub(address).Submit(shell("true"), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert any(d.DESCRIPTOR.name == "RetryInfo" for d in details_of(err.value))
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
        eventually(
            lambda: (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                == health_pb2.HealthCheckResponse.NOT_SERVING
            ),
            10,
            message="health follows Redis",
        )
    finally:
        proc.stop()
