"""One task's trace across real processes: a stage 4 platform (REST API, gRPC provider,
scheduler, agent and manager, Kafka between them) exports its spans over OTLP/gRPC to a
receiver the test runs, and one task submitted through the REST API is one trace, whose spans
come from every role in the order the task crossed them, and whose id is stored on the task."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from observability_support import free_address
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otlp_receiver import OTLPReceiver, ReceivedSpan, render_tree

from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.messaging.topics import ensure_topics
from common.observability import tracing
from common.testing import RoleProcess, eventually
from common.testing.processes import stop_all

pytestmark = pytest.mark.integration

TRACES_DB = 11  # other suites flush database 0 per test; this module's platform lives on

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


@dataclass
class TracedPlatform:
    receiver: OTLPReceiver
    api: str  # the REST API's base URL
    tasks: TaskClient  # on the platform's Redis database, to read what is stored


@pytest.fixture(scope="module")
def traced(
    redis_service, zookeeper_service, kafka_service, tmp_path_factory
) -> Iterator[TracedPlatform]:
    """A stage 4 platform whose roles export their spans to the test's OTLP receiver, started
    once for the module (its roles take seconds to start) on a database and chroot of its own."""
    receiver = OTLPReceiver().start()
    redis_url = redis_service.env["TASKLAB_REDIS_URL"].rsplit("/", 1)[0] + f"/{TRACES_DB}"
    client = redis_client(redis_url)
    client.flushdb()
    namespace = f"tr{uuid.uuid4().hex[:8]}"
    env = {
        "TASKLAB_REDIS_URL": redis_url,
        "TASKLAB_ZK_CHROOT": f"/tasklab-traces-{uuid.uuid4().hex[:8]}",
        **zookeeper_service.env,
        **kafka_service.env,
        "TASKLAB_KAFKA_NAMESPACE": namespace,
        "TASKLAB_OTLP_ENDPOINT": receiver.endpoint,
        # Batches leave after 100 ms rather than 5 s: the tests wait for them.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    ensure_topics(env["TASKLAB_KAFKA_BOOTSTRAP"], namespace)
    api_address = free_address()
    log_dir = tmp_path_factory.mktemp("traces")
    processes = [
        RoleProcess(role, 4, {**env, **own}, log_dir, name=name)
        for role, name, own in (
            ("scheduler", "scheduler-1", {"TASKLAB_SCHEDULER_ID": "scheduler-1"}),
            ("agent", "agent-1", {"TASKLAB_AGENT_ID": "agent-1"}),
            ("manager", "manager-1", {"TASKLAB_MANAGER_ID": "manager-1"}),
            ("rpc", "rpc-1", {"TASKLAB_RPC_ADDRESS": free_address()}),
            ("api", "api-1", {"TASKLAB_API_ADDRESS": api_address}),
        )
    ]
    try:
        for proc in processes:
            proc.start()
        api = f"http://{api_address}"
        with httpx.Client(base_url=api, timeout=20) as http:
            # (a read goes through the API to a registered provider: both are up)
            eventually(
                lambda: _answers(http, "/api/v1/tasks?limit=1"), 60, 0.3, message="API ready"
            )
        yield TracedPlatform(receiver, api, TaskClient(RedisTaskStore(client)))
    finally:
        stop_all(processes)
        for proc in processes:
            text = proc.log_text()
            if text:
                print(f"\n----- {proc.name} (pid {proc.pid}) -----\n{text[-3000:]}")
        receiver.stop()
        client.close()


def submit(traced: TracedPlatform, body: dict) -> str:
    with httpx.Client(base_url=traced.api, timeout=20) as http:
        created = http.post("/api/v1/tasks", json=body)
    assert created.status_code == 201, created.text
    return created.json()["taskId"]


def test_a_task_submitted_through_the_api_is_one_trace_across_every_role(traced):
    # Given the traced platform
    receiver, tasks = traced.receiver, traced.tasks

    # When one task is submitted through the REST API and runs
    task_id = submit(traced, {"taskType": "SHELL", "payload": "echo hi"})
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
    # applied again (its first "apply" notes tasklab.deferred), each time a span.
    by_key = {(s.service, s.name): s for s in spans}
    for key, parent in EXPECTED_PARENTS.items():
        for span in (s for s in spans if (s.service, s.name) == key):
            assert span.parent_id == (by_key[parent].span_id if parent else ""), key
    repeated = [s for s in spans if s.service != "tasklab-manager"]
    assert len(repeated) == len({(s.service, s.name) for s in repeated}), render_tree(spans)
    # ...the stored traceparent is the submit span, and every span names the task
    submit_span = by_key[("tasklab-rpc", "submit")]
    assert task.traceparent is not None and submit_span.span_id in task.traceparent
    named = [
        s for s in spans if s.service not in ("tasklab-api",) and s.name != "TaskService/Submit"
    ]
    assert {s.attributes["tasklab.task_id"] for s in named} == {task_id}
    run = by_key[("tasklab-agent", "run")]
    assert (run.instance, run.attributes["tasklab.exit_code"]) == ("agent-1", 0)
    assert by_key[("tasklab-scheduler", "schedule")].attributes["tasklab.epoch"] >= 1


def test_a_retried_attempt_is_a_new_trace_linked_to_the_first_and_stored_on_the_task(traced):
    # Given a task that fails its first attempt and succeeds its second (the agent gives each
    # attempt its number as TASKLAB_ATTEMPT)
    receiver, tasks = traced.receiver, traced.tasks
    task_id = submit(
        traced,
        {"taskType": "SHELL", "payload": 'test "$TASKLAB_ATTEMPT" -ge 2', "retryCount": 1},
    )
    first_trace = tasks.get(task_id).trace_id

    # When it has run twice
    final = tasks.wait(task_id, 60)
    assert (final.status.value, final.attempt) == ("SUCCESS", 2)

    # Then the task names a second trace, of attempt 2, started by the scheduler and linked
    # to the first; the first holds attempt 1's run, the second attempt 2's
    assert final.trace_id != first_trace and final.trace_attempt == 2
    eventually(
        lambda: (
            {"schedule", "run", "apply SUCCESS"} <= {s.name for s in receiver.spans(final.trace_id)}
        ),
        30,
        0.2,
        message="attempt 2's spans arrived",
    )
    second = receiver.spans(final.trace_id)
    print("\n" + render_tree(second))
    [schedule] = [s for s in second if s.name == "schedule"]
    assert schedule.parent_id == "" and schedule.links == (first_trace,)
    assert {s.attributes.get("tasklab.attempt") for s in second} == {2}
    first_runs = [s for s in receiver.spans(first_trace) if s.name == "run"]
    assert [
        (r.attributes["tasklab.attempt"], r.attributes["tasklab.exit_code"]) for r in first_runs
    ] == [(1, 1)]
    # ...and the history entry that started each attempt's trace names it
    traced_entries = [e for e in tasks.store.history(task_id) if "traceId" in e]
    assert [(e["state"], e["attempt"], e["traceId"]) for e in traced_entries] == [
        ("PENDING", 1, first_trace),
        ("DISPATCHED", 2, final.trace_id),
    ]


def _answers(http: httpx.Client, path: str) -> bool:
    try:
        return http.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def _seen(spans: list[ReceivedSpan]) -> set[tuple[str, str]]:
    return {(s.service, s.name) for s in spans}


def test_a_stage_1_agent_continues_the_stored_trace_and_sends_its_batch_when_it_stops(
    redis_url, tmp_path
):
    # Given a stage 1 agent (no Kafka: the trace reaches it on the task hash) whose batches
    # would wait ten minutes, and a submit traced in this process
    receiver = OTLPReceiver().start()
    exporter = InMemorySpanExporter()
    tracing.install([SimpleSpanProcessor(exporter)], "test")
    agent = RoleProcess(
        "agent",
        1,
        {
            "TASKLAB_REDIS_URL": redis_url,
            "TASKLAB_AGENT_ID": "agent-s1",
            "TASKLAB_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "600000",
        },
        tmp_path,
        name="agent-s1",
    )
    try:
        agent.start()
        tasks = TaskClient(RedisTaskStore(redis_client(redis_url)))
        task, _ = tasks.submit({"taskType": "SHELL", "payload": "echo hi"})
        assert tasks.wait(task.task_id, 30).status.value == "SUCCESS"
        assert receiver.spans(task.trace_id) == []  # still in the agent's batch

        # When the agent is stopped (SIGTERM)
        stop_all([agent])

        # Then its span arrived on the way out, under the submit's stored span
        eventually(lambda: receiver.spans(task.trace_id), 10, message="the agent's batch")
        [run] = receiver.spans(task.trace_id)
        [submit_span] = exporter.get_finished_spans()
        assert (run.service, run.name) == ("tasklab-agent", "run")
        assert run.parent_id == f"{submit_span.get_span_context().span_id:016x}"
    finally:
        tracing.shutdown()
        stop_all([agent])
        receiver.stop()
