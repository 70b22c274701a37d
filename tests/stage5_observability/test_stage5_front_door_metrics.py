"""Stage 4's front doors on their operator ports: a provider counts gRPC calls by method and
code, the submissions and cancels it accepted; the REST API counts requests by route template
and serves /metrics on its own port as well."""

from __future__ import annotations

import uuid

import grpc
import httpx
import pytest
from observability_support import free_address, promtool_problems, scrape, wait_ready

from common.rpc.gen import task_service_pb2 as pb
from common.rpc.gen import task_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

SERVICE = "tasklab.v1.TaskService"


@pytest.fixture
def stage4_env(redis_url, zookeeper_service, zk_chroot, kafka_service, kafka_namespace):
    return {
        "TASKLAB_REDIS_URL": redis_url,
        "TASKLAB_ZK_CHROOT": zk_chroot,
        **zookeeper_service.env,
        **kafka_service.env,
        "TASKLAB_KAFKA_NAMESPACE": kafka_namespace,
    }


def test_a_provider_counts_grpc_calls_by_method_and_code_and_what_it_accepted(
    observed_role, stage4_env
):
    # Given a TaskService provider on a known address, with an operator port
    rpc_address = free_address()
    proc, address = observed_role(
        "rpc", 4, {**stage4_env, "TASKLAB_RPC_ADDRESS": rpc_address}, "rpc-m1"
    )
    checks = wait_ready(proc, address)["checks"]
    assert {"redis", "zookeeper"} <= set(checks), checks
    stub = pb_grpc.TaskServiceStub(grpc.insecure_channel(rpc_address))

    # When a client submits two tasks, cancels one and asks for a task that does not exist
    submitted = [
        stub.Submit(pb.SubmitRequest(task_type=pb.SHELL, payload="true"), timeout=10).task
        for _ in range(2)
    ]
    stub.Cancel(pb.CancelRequest(task_id=submitted[0].task_id), timeout=10)
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetTaskInfo(pb.GetTaskInfoRequest(task_id=str(uuid.uuid4())), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    # Then its /metrics count each call with its code, and how long it took
    metrics = scrape(address)
    calls = "tasklab_grpc_server_requests_total"
    assert metrics.value(calls, method=f"{SERVICE}/Submit", code="OK") == 2
    assert metrics.value(calls, method=f"{SERVICE}/Cancel", code="OK") == 1
    assert metrics.value(calls, method=f"{SERVICE}/GetTaskInfo", code="NOT_FOUND") == 1
    duration = "tasklab_grpc_server_request_duration_seconds_count"
    assert metrics.value(duration, method=f"{SERVICE}/Submit") == 2
    # ...what it accepted: two submissions, one cancel (the cancel wrote CANCELLED)
    assert metrics.value("tasklab_tasks_submitted_total", type="SHELL") == 2
    assert metrics.value("tasklab_tasks_finished_total", type="SHELL", status="CANCELLED") == 1
    # ...and the queue both messages wait in (no agent runs here; the cancelled task's message
    # stays until an agent takes it and drops it)
    assert metrics.value("tasklab_queue_depth", queue="pending") == 2
    assert promtool_problems(metrics.text) == ""


def test_the_api_counts_requests_by_route_template_on_its_own_port_and_its_operator_port(
    observed_role, stage4_env
):
    # Given a provider and the REST API over it, the API with an operator port too
    rpc_proc, rpc_operator = observed_role(
        "rpc", 4, {**stage4_env, "TASKLAB_RPC_ADDRESS": free_address()}, "rpc-m2"
    )
    wait_ready(rpc_proc, rpc_operator)
    api_address = free_address()
    api, address = observed_role(
        "api", 4, {**stage4_env, "TASKLAB_API_ADDRESS": api_address}, "api-m1"
    )
    checks = wait_ready(api, address)["checks"]
    assert {"redis", "zookeeper", "kafka", "providers"} <= set(checks), checks

    # When a client submits a task, reads it, reads one that does not exist, and a wrong path
    with httpx.Client(base_url=f"http://{api_address}", timeout=20) as http:
        created = http.post("/api/v1/tasks", json={"taskType": "SHELL", "payload": "true"})
        assert created.status_code == 201, created.text
        task_id = created.json()["taskId"]
        assert http.get(f"/api/v1/tasks/{task_id}").status_code == 200
        assert http.get(f"/api/v1/tasks/{uuid.uuid4()}").status_code == 404
        assert http.get("/no/such/route").status_code == 404
        own_port = http.get("/metrics")

    # Then the API's own /metrics and its operator port's agree, by route template
    assert own_port.status_code == 200
    for metrics in (scrape(api_address), scrape(address)):
        requests = "tasklab_http_requests_total"
        assert metrics.value(requests, route="/api/v1/tasks", method="POST", status="201") == 1
        by_id = "/api/v1/tasks/{taskId}"
        assert metrics.value(requests, route=by_id, method="GET", status="200") == 1
        assert metrics.value(requests, route=by_id, method="GET", status="404") == 1
        assert metrics.value(requests, route="unmatched", method="GET", status="404") == 1
        assert task_id not in metrics.text, "a path's task id never becomes a label"
        assert metrics.value("tasklab_http_request_duration_seconds_count", route=by_id) == 2
        assert promtool_problems(metrics.text) == ""
    # ...and the provider behind it saw the API's calls as gRPC calls
    provider = scrape(rpc_operator)
    assert (
        provider.value("tasklab_grpc_server_requests_total", method=f"{SERVICE}/Submit", code="OK")
        == 1
    )
