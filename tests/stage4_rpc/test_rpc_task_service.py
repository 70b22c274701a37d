"""The TaskService on a running stage 4 platform, through the client proxy and two providers."""

from __future__ import annotations

import threading

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from rpc_support import final_status, shell

from common import keys
from common.rpc.errors import details_of
from common.rpc.gen import task_service_pb2 as pb
from common.testing import eventually


@pytest.fixture(scope="module")
def providers(stage4, proxy) -> list[str]:
    addresses = [stage4.start_provider("rpc-1"), stage4.start_provider("rpc-2")]
    eventually(lambda: sorted(proxy.providers()) == sorted(addresses), 10, message="discovered")
    return addresses


def test_a_task_submitted_through_the_proxy_runs_to_success_on_either_provider(proxy, providers):
    used = set()
    ids = []
    for i in range(4):
        answer = proxy.submit(shell(f"echo run-{i}"))
        used.add(proxy.last_provider)
        assert answer.created and answer.task.status == pb.PENDING
        ids.append(answer.task.task_id)
    assert used == set(providers), "round robin spreads calls over both providers"
    for task_id in ids:
        assert final_status(proxy, task_id) == pb.SUCCESS


def test_get_task_info_shows_the_timeline_logs_and_result(proxy, providers):
    task_id = proxy.submit(shell("echo one; echo two")).task.task_id
    via = proxy.last_provider
    assert final_status(proxy, task_id) == pb.SUCCESS
    info = proxy.get_task_info(task_id)
    assert info.task.result == "one\ntwo\n" and info.task.exit_code == 0
    assert list(info.logs) == ["one", "two"]
    states = [e.state for e in info.timeline]
    assert states == [pb.PENDING, pb.SCHEDULED, pb.DISPATCHED, pb.RUNNING, pb.SUCCESS]
    first, last = info.timeline[0], info.timeline[-1]
    assert first.actor == f"rpc:{via}" and first.attempt == 1, "the provider that took it"
    assert last.from_state == pb.RUNNING and last.actor == info.task.agent_id
    assert last.at.ToNanoseconds() >= first.at.ToNanoseconds() > 0
    assert all(e.epoch >= 1 for e in info.timeline[1:]), "placement is fenced by the leader epoch"


def test_the_same_request_id_returns_the_same_task(proxy, providers):
    first = proxy.submit(shell("true", request_id="rpc-idem-1"))
    again = proxy.submit(shell("true", request_id="rpc-idem-1"))
    assert first.created and not again.created
    assert again.task.task_id == first.task.task_id


def test_the_same_request_id_with_another_body_is_already_exists_naming_the_task(proxy, providers):
    first = proxy.submit(shell("echo first", request_id="rpc-idem-2", retry_count=1))
    with pytest.raises(grpc.RpcError) as err:
        proxy.submit(shell("echo first", request_id="rpc-idem-2", retry_count=2))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    (info,) = details_of(err.value)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("IDEMPOTENCY_CONFLICT", "tasklab.dev")
    assert info.metadata["taskId"] == first.task.task_id
    assert info.metadata["requestId"] == "rpc-idem-2"


def test_fifty_simultaneous_submits_with_one_request_id_make_one_task(stage4, proxy, providers):
    # Given 50 threads released at once, each submitting the same request through the proxy
    request = shell("echo once", request_id="rpc-idem-50")
    start = threading.Barrier(50)
    answers: list[pb.SubmitResponse] = []
    failures: list[BaseException] = []

    def submit() -> None:
        start.wait(10)
        try:
            answers.append(proxy.submit(request))
        except grpc.RpcError as exc:
            failures.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Then every call got the same task, exactly one of them created it, both providers
    # served some, and Redis holds one task with that requestId (in the index and as a hash)
    assert not failures and len(answers) == 50
    assert len({a.task.task_id for a in answers}) == 1
    assert sum(a.created for a in answers) == 1
    redis = stage4.tasks.store.client
    indexed = [
        t
        for t in redis.zrange(keys.TASK_INDEX, 0, -1)
        if redis.hget(keys.task(t.decode()), "requestId") == b"rpc-idem-50"
    ]
    hashes = [
        k
        for k in redis.scan_iter(match="task:*", count=1000)
        if redis.type(k) == b"hash" and redis.hget(k, "requestId") == b"rpc-idem-50"
    ]
    assert len(indexed) == 1 and len(hashes) == 1


def test_a_bad_submit_lists_every_field_violation_in_rich_details(proxy, providers):
    with pytest.raises(grpc.RpcError) as err:
        proxy.submit(
            pb.SubmitRequest(
                task_type=9, payload="  ", execution_timeout=0, retry_count=11, task_name="x" * 201
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (bad,) = [d for d in details_of(err.value) if isinstance(d, error_details_pb2.BadRequest)]
    fields = {v.field: v.description for v in bad.field_violations}
    assert set(fields) == {"taskName", "taskType", "payload", "executionTimeout", "retryCount"}
    assert "SHELL" in fields["taskType"] and fields["payload"] == "must not be blank"


def test_a_missing_task_type_is_named_as_required(proxy, providers):
    with pytest.raises(grpc.RpcError) as err:
        proxy.submit(pb.SubmitRequest(payload="true"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (bad,) = details_of(err.value)
    assert [(v.field, v.description) for v in bad.field_violations] == [("taskType", "is required")]


def test_an_unknown_task_is_not_found_for_every_method(proxy, providers):
    missing = "00000000-0000-4000-8000-000000000000"
    for call in (
        lambda: proxy.get_task_info(missing),
        lambda: proxy.cancel(missing),
        lambda: proxy.retry(missing),
        lambda: list(proxy.watch(missing, timeout=5)),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()


def test_cancelling_a_finished_task_is_a_failed_precondition(proxy, providers):
    task_id = proxy.submit(shell("true")).task.task_id
    assert final_status(proxy, task_id) == pb.SUCCESS
    with pytest.raises(grpc.RpcError) as err:
        proxy.cancel(task_id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    (failure,) = details_of(err.value)
    assert failure.violations[0].description == "SUCCESS"


def test_retrying_a_running_task_is_a_failed_precondition_and_a_cancelled_one_retries(
    proxy, providers
):
    task_id = proxy.submit(shell("sleep 30")).task.task_id
    eventually(
        lambda: proxy.get_task_info(task_id).task.status == pb.RUNNING, 20, message="running"
    )
    with pytest.raises(grpc.RpcError) as err:
        proxy.retry(task_id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    cancelled = proxy.cancel(task_id)
    assert cancelled.status == pb.CANCELLED and cancelled.cancelled_from == pb.RUNNING
    assert proxy.cancel(task_id).already_cancelled, "a second cancel is accepted again"
    retried = proxy.retry(task_id, request_id="retry-once")
    assert retried.created and retried.retry_of == task_id and retried.new_task_id != task_id
    again = proxy.retry(task_id, request_id="retry-once")
    assert not again.created and again.new_task_id == retried.new_task_id
    info = proxy.get_task_info(retried.new_task_id)
    assert info.task.retry_of == task_id and info.task.payload == "sleep 30"
    proxy.cancel(retried.new_task_id)


def test_a_failed_task_retries_into_a_new_task_that_succeeds_only_if_its_command_does(
    proxy, providers
):
    task_id = proxy.submit(shell("exit 3")).task.task_id
    assert final_status(proxy, task_id) == pb.FAILED
    retried = proxy.retry(task_id)
    assert final_status(proxy, retried.new_task_id) == pb.FAILED
    assert proxy.get_task_info(task_id).task.status == pb.FAILED, "the old task stays final"


def test_an_oversized_payload_is_resource_exhausted_with_its_violation(proxy, providers):
    with pytest.raises(grpc.RpcError) as err:
        proxy.submit(shell("#" * (64 * 1024 + 1)))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    (bad,) = details_of(err.value)
    assert bad.field_violations[0].field == "payload"


def test_a_request_over_the_message_limit_is_refused_before_it_is_read(proxy, providers):
    with pytest.raises(grpc.RpcError) as err:
        # Over the largest composite document (16 payloads of 64 KiB and an envelope), the
        # one limit a provider's gRPC server has for every method.
        proxy.submit(shell("#" * (17 * 64 * 1024)))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(proxy.list(pb.ListRequest(name="#" * 20)).tasks) == 0, "nothing was stored"


def test_list_filters_and_pages_with_an_opaque_cursor(proxy, providers):
    marker = "list-marker"
    ids = [proxy.submit(shell("true", task_name=f"{marker}-{i}")).task.task_id for i in range(5)]
    seen, cursor, pages = [], "", 0
    while True:
        page = proxy.list(pb.ListRequest(name=marker.upper(), page_size=2, cursor=cursor))
        seen += [t.task_id for t in page.tasks]
        cursor, pages = page.next_cursor, pages + 1
        if not cursor:
            break
        assert pages < 10
    assert seen == ids[::-1], "newest first, each once"
    for task_id in ids:
        final_status(proxy, task_id)
    done = proxy.list(pb.ListRequest(name=marker, status=pb.SUCCESS, task_type=pb.SHELL))
    assert {t.task_id for t in done.tasks} == set(ids)
    assert len(proxy.list(pb.ListRequest(name=marker, task_type=pb.PYTHON_SCRIPT)).tasks) == 0
    agent = done.tasks[0].agent_id
    by_agent = proxy.list(pb.ListRequest(name=marker, agent_id=agent, page_size=50))
    assert by_agent.tasks and all(t.agent_id == agent for t in by_agent.tasks)
    with pytest.raises(grpc.RpcError) as err:
        proxy.list(pb.ListRequest(cursor="not-a-cursor"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_watch_streams_transitions_and_logs_in_order_and_resumes_from_a_sequence(proxy, providers):
    task_id = proxy.submit(shell("for i in 1 2 3; do echo line-$i; done")).task.task_id
    events = list(proxy.watch(task_id, timeout=30))
    assert events[-1].final.status == pb.SUCCESS
    logs = [(e.sequence, e.log.line) for e in events if e.WhichOneof("event") == "log"]
    assert logs == [(0, "line-1"), (1, "line-2"), (2, "line-3")]
    transitions = [e.sequence for e in events if e.WhichOneof("event") == "transition"]
    assert transitions == list(range(5))
    resumed = list(proxy.watch(task_id, from_transition=3, from_log=2, timeout=10))
    kinds = [(e.WhichOneof("event"), e.sequence) for e in resumed]
    assert kinds == [("transition", 3), ("transition", 4), ("log", 2), ("final", 0)]


def test_a_watch_ends_at_its_deadline_when_the_task_does_not_finish(proxy, providers):
    task_id = proxy.submit(shell("sleep 30")).task.task_id
    with pytest.raises(grpc.RpcError) as err:
        list(proxy.watch(task_id, timeout=1.5))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    proxy.cancel(task_id)


def test_each_provider_registers_an_ephemeral_node_with_its_metadata(stage4, providers):
    import json

    from common.rpc.registry import provider_node

    for address in providers:
        data, stat = stage4.zk.get(provider_node(address))
        meta = json.loads(data)
        assert f"{meta['host']}:{meta['port']}" == address
        assert meta["pid"] == stage4.providers[address].pid
        assert meta["version"] and meta["startedAt"] > 0
        assert stat.ephemeralOwner != 0, "ephemeral: it lives as long as the provider's session"


def test_health_and_reflection_answer_on_every_provider(providers):
    for address in providers:
        channel = grpc.insecure_channel(address)
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "tasklab.v1.TaskService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        db = ProtoReflectionDescriptorDatabase(channel)
        assert "tasklab.v1.TaskService" in db.get_services()
        assert "grpc.health.v1.Health" in db.get_services()
        served = db.FindFileContainingSymbol("tasklab.v1.TaskService")
        # The fields a task's view grew keep numbers of their own: never a renumbered one.
        task = next(m for m in served.message_type if m.name == "Task")
        numbers = {f.name: f.number for f in task.field}
        assert [numbers[n] for n in ("schedule_id", "scheduled_for", "trace_id")] == [27, 28, 29]
        service = served.service[0]
        assert [m.name for m in service.method] == [
            "Submit",
            "GetTaskInfo",
            "Cancel",
            "Retry",
            "List",
            "Watch",
            "ListAgents",
            "SubmitComposite",
            "CreateSchedule",
            "GetSchedule",
            "ListSchedules",
            "SetScheduleSuspended",
            "DeleteSchedule",
            "PreviewSchedule",
        ]
