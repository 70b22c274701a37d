"""One task's trace across real processes: a stage 4 platform (REST API, gRPC provider,
scheduler, agent and manager, Kafka between them) exports its spans over OTLP/gRPC to a
receiver the test runs, and one task submitted through the REST API is one trace, whose spans
come from every role in the order the task crossed them, and whose id is stored on the task."""

from __future__ import annotations

import httpx
import pytest
from observability_support import free_address
from otlp_receiver import OTLPReceiver, ReceivedSpan, render_tree

from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.testing import RoleProcess, eventually
from common.testing.processes import stop_all

pytestmark = pytest.mark.integration

# The one trace of a task's first attempt: (service, span) -> its parent (service, span).
EXPECTED_PARENTS = {
    ("tasklab-api", "POST /api/v1/tasks"): None,
    ("tasklab-rpc", "TaskService/Submit"): ("tasklab-api", "POST /api/v1/tasks"),
    ("tasklab-rpc", "submit"): ("tasklab-rpc", "TaskService/Submit"),
    ("tasklab-scheduler", "schedule"): ("tasklab-rpc", "submit"),
    ("tasklab-agent", "run"): ("tasklab-scheduler", "schedule"),
    ("tasklab-manager", "apply RUNNING"): ("tasklab-agent", "run"),
    ("tasklab-manager", "apply SUCCESS"): ("tasklab-agent", "run"),
}


def test_a_task_submitted_through_the_api_is_one_trace_across_every_role(
    redis_url, zookeeper_service, zk_chroot, kafka_service, kafka_namespace, tmp_path
):
    # Given a stage 4 platform whose roles export their spans to the test's OTLP receiver
    receiver = OTLPReceiver().start()
    api_address = free_address()
    env = {
        "TASKLAB_REDIS_URL": redis_url,
        "TASKLAB_ZK_CHROOT": zk_chroot,
        **zookeeper_service.env,
        **kafka_service.env,
        "TASKLAB_KAFKA_NAMESPACE": kafka_namespace,
        "TASKLAB_OTLP_ENDPOINT": receiver.endpoint,
        # Batches leave after 100 ms rather than 5 s: the test waits for them.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    processes = [
        RoleProcess(role, 4, {**env, **own}, tmp_path, name=name)
        for role, name, own in (
            ("scheduler", "scheduler-1", {"TASKLAB_SCHEDULER_ID": "scheduler-1"}),
            ("agent", "agent-1", {"TASKLAB_AGENT_ID": "agent-1"}),
            ("manager", "manager-1", {"TASKLAB_MANAGER_ID": "manager-1"}),
            ("rpc", "rpc-1", {"TASKLAB_RPC_ADDRESS": free_address()}),
            ("api", "api-1", {"TASKLAB_API_ADDRESS": api_address}),
        )
    ]
    tasks = TaskClient(RedisTaskStore(redis_client(redis_url)))
    try:
        for proc in processes:
            proc.start()
        with httpx.Client(base_url=f"http://{api_address}", timeout=20) as http:
            # (a read goes through the API to a registered provider: both are up)
            eventually(
                lambda: _answers(http, "/api/v1/tasks?limit=1"), 60, 0.3, message="API ready"
            )

            # When one task is submitted through the REST API and runs
            created = http.post("/api/v1/tasks", json={"taskType": "SHELL", "payload": "echo hi"})
            assert created.status_code == 201, created.text
            task_id = created.json()["taskId"]
        assert tasks.wait(task_id, 60).status.value == "SUCCESS"
        task = tasks.get(task_id)

        # Then its trace id is stored on it, and that trace holds a span of every role
        assert task.trace_id is not None and len(task.trace_id) == 32
        eventually(
            lambda: _seen(receiver.spans(task.trace_id)) >= set(EXPECTED_PARENTS),
            30,
            0.2,
            message="every role's spans of the task arrived",
        )
        spans = receiver.spans(task.trace_id)
        print("\n" + render_tree(spans))
        # ...each under the span of the hop before it. Only the manager may have more than one
        # span of a kind: a final status that came before its log lines is held back and
        # applied again (its first "apply" ends with NotYet), each time a span.
        by_key = {(s.service, s.name): s for s in spans}
        for key, parent in EXPECTED_PARENTS.items():
            for span in (s for s in spans if (s.service, s.name) == key):
                assert span.parent_id == (by_key[parent].span_id if parent else ""), key
        repeated = [s for s in spans if s.service != "tasklab-manager"]
        assert len(repeated) == len({(s.service, s.name) for s in repeated}), render_tree(spans)
        # ...the stored traceparent is the submit span, and every span names the task
        submit = by_key[("tasklab-rpc", "submit")]
        assert task.traceparent is not None and submit.span_id in task.traceparent
        named = [
            s for s in spans if s.service not in ("tasklab-api",) and s.name != "TaskService/Submit"
        ]
        assert {s.attributes["tasklab.task_id"] for s in named} == {task_id}
        run = by_key[("tasklab-agent", "run")]
        assert (run.instance, run.attributes["tasklab.exit_code"]) == ("agent-1", 0)
        assert by_key[("tasklab-scheduler", "schedule")].attributes["tasklab.epoch"] >= 1
    finally:
        stop_all(processes)
        receiver.stop()


def _answers(http: httpx.Client, path: str) -> bool:
    try:
        return http.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def _seen(spans: list[ReceivedSpan]) -> set[tuple[str, str]]:
    return {(s.service, s.name) for s in spans}
