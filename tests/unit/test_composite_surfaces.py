"""Composite tasks at the front door, without services: the gRPC TaskService (a real server on
a loopback port, in this process), the REST app in front of it, and the CLI's two backends,
all over the in-memory task and composite stores.

No coordinator runs here: a test moves children and parents itself, as agents and the
coordinator would. The same surfaces run against the Redis stores and a live coordinator in
tests/stage4_rpc/test_composite_api.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import pytest

pytest.importorskip("grpc", reason="the stage4 extra is not installed")

import grpc  # noqa: E402
import httpx  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from common.adapters.memory_composite import InMemoryCompositeStore  # noqa: E402
from common.adapters.memory_store import InMemoryTaskStore  # noqa: E402
from common.api import dto, views  # noqa: E402
from common.api.app import create_app, openapi_document  # noqa: E402
from common.cli import main  # noqa: E402
from common.cli.backend import RedisBackend  # noqa: E402
from common.cli.remote import ApiTaskClient  # noqa: E402
from common.client import TaskClient  # noqa: E402
from common.config import Settings  # noqa: E402
from common.domain.composite import (  # noqa: E402
    CompositeKind,
    CompositeSpec,
    validate_composite,
)
from common.domain.task import TaskType  # noqa: E402
from common.domain.transitions import TaskStatus  # noqa: E402
from common.rpc import convert  # noqa: E402
from common.rpc.auth import required_role  # noqa: E402
from common.rpc.errors import details_of  # noqa: E402
from common.rpc.gen import task_service_pb2 as pb  # noqa: E402
from common.rpc.gen import task_service_pb2_grpc as pb_grpc  # noqa: E402
from common.rpc.service import TaskServicer  # noqa: E402
from common.security import Role  # noqa: E402

# Nothing listens on port 1: a test that reached a real service would fail, not pass.
OFFLINE = Settings(
    redis_url="redis://127.0.0.1:1/0", zk_hosts="127.0.0.1:1", kafka_bootstrap="127.0.0.1:1"
)
URL = "http://api.test"


# -- the platform a test talks to ---------------------------------------------------------------


class Platform:
    """In-memory stores behind a real gRPC TaskService on a loopback port."""

    def __init__(self) -> None:
        self.store = InMemoryTaskStore()
        self.composites = InMemoryCompositeStore(self.store)
        # A small payload limit, so "too large" needs no megabytes.
        self.client = TaskClient(self.store, 1024, self.composites)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_TaskServiceServicer_to_server(
            TaskServicer(self.client, redis=None, actor="rpc:test"), self.server
        )
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.TaskServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0).wait(5)

    def finish(self, task_id: str, status: TaskStatus, result: str = "") -> None:
        """What an agent (or the coordinator, for a parent) does, written straight in."""
        self.store.tasks[task_id].update({"status": status.value, "result": result})


class StubTasks:
    """The TaskServiceProxy's interface over one stub, for the REST app."""

    def __init__(self, stub: pb_grpc.TaskServiceStub) -> None:
        self.stub = stub

    def submit_composite(self, request, timeout=None, metadata=None):
        return self.stub.SubmitComposite(request, timeout=timeout, metadata=metadata)

    def get_task_info(self, task_id, timeout=None, metadata=None):
        request = pb.GetTaskInfoRequest(task_id=task_id)
        return self.stub.GetTaskInfo(request, timeout=timeout, metadata=metadata)

    def cancel(self, task_id, timeout=None, metadata=None):
        request = pb.CancelRequest(task_id=task_id)
        return self.stub.Cancel(request, timeout=timeout, metadata=metadata)

    def retry(self, task_id, request_id="", timeout=None, metadata=None):
        request = pb.RetryRequest(task_id=task_id, request_id=request_id)
        return self.stub.Retry(request, timeout=timeout, metadata=metadata)


class AppTransport(httpx.BaseTransport):
    """A synchronous httpx transport into the ASGI app (what the CLI's client needs), each
    request run to its end on an event loop of its own."""

    def __init__(self, app) -> None:
        self.asgi = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def go() -> httpx.Response:
            answer = await self.asgi.handle_async_request(request)
            content = await answer.aread()
            return httpx.Response(answer.status_code, headers=answer.headers, content=content)

        return asyncio.run(go())


def http_client(app) -> httpx.Client:
    return httpx.Client(transport=AppTransport(app), base_url=URL)


@pytest.fixture
def platform() -> Iterator[Platform]:
    running = Platform()
    yield running
    running.close()


@pytest.fixture
def api(platform) -> Iterator[httpx.Client]:
    with http_client(create_app(OFFLINE, tasks=StubTasks(platform.stub))) as http:
        yield http


def shell(payload: str, **extra) -> dict:
    return {"taskType": "SHELL", "payload": payload, **extra}


DIAMOND = {
    "kind": "DAG",
    "taskName": "diamond",
    "nodes": [
        {"name": "a", "task": shell("echo a")},
        {"name": "b", "task": shell("echo b"), "dependsOn": ["a"]},
        {"name": "c", "task": shell("echo c"), "dependsOn": ["a"], "trigger": "ALL_DONE"},
        {"name": "d", "task": shell("echo d"), "dependsOn": ["b", "c"]},
    ],
}
SHARDS = {"kind": "SHARDS", "completions": 3, "parallelism": 2, "template": shell("echo s")}
CYCLE_AND_UNKNOWN = {
    "kind": "DAG",
    "nodes": [
        {"name": "a", "task": shell("echo a"), "dependsOn": ["c"]},
        {"name": "b", "task": shell("echo b"), "dependsOn": ["a", "ghost"]},
        {"name": "c", "task": shell("echo c"), "dependsOn": ["b"]},
    ],
}


def rest_request(document: dict) -> pb.SubmitCompositeRequest:
    return views.composite_request(dto.SubmitComposite.model_validate(document), None)


# -- the wire shapes ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(dto.COMPOSITE_EXAMPLES))
def test_each_openapi_example_is_a_valid_document_that_crosses_grpc_unchanged(name):
    document = dto.COMPOSITE_EXAMPLES[name]["value"]
    direct = validate_composite(document)
    # REST body -> protobuf -> the dict the provider validates: the same document.
    crossed = validate_composite(convert.composite_data(rest_request(document)))
    assert crossed.to_payload() == direct.to_payload()


def test_the_openapi_document_shows_an_example_of_every_kind():
    body = openapi_document()["paths"]["/api/v1/composites"]["post"]["requestBody"]
    examples = body["content"]["application/json"]["examples"].values()
    assert {e["value"]["kind"] for e in examples} == {k.value for k in CompositeKind}
    reduces = [e["value"] for e in examples if e["value"]["kind"] == "MAP_REDUCE"]
    assert reduces and all("reduce" in r for r in reduces)


def test_unset_fields_of_a_composite_request_are_left_to_the_validators_defaults():
    data = convert.composite_data(
        pb.SubmitCompositeRequest(
            spec=pb.CompositeSpec(kind=pb.SHARDS, completions=2, template=pb.TaskSpec(payload="x"))
        )
    )
    assert data == {
        "kind": "SHARDS",
        "completions": 2,
        "template": {"taskName": "", "payload": "x"},
    }
    assert validate_composite({**data, "template": {**data["template"], "taskType": "SHELL"}})


def test_submit_composite_needs_the_role_submit_needs():
    prefix = "/tasklab.v1.TaskService/"
    assert required_role(prefix + "SubmitComposite") == required_role(prefix + "Submit")
    assert required_role(prefix + "SubmitComposite") == Role.TASK_WRITE


# -- gRPC -----------------------------------------------------------------------------------------


def grpc_request(document: dict, request_id: str = "") -> pb.SubmitCompositeRequest:
    return views.composite_request(dto.SubmitComposite.model_validate(document), request_id)


def test_submit_composite_answers_the_parent_with_its_children_and_the_same_key_replays_it(
    platform,
):
    first = platform.stub.SubmitComposite(grpc_request(SHARDS, "shards-1"))
    again = platform.stub.SubmitComposite(grpc_request(SHARDS, "shards-1"))
    assert first.created and not again.created
    assert again.task.task_id == first.task.task_id
    parent = first.task
    assert parent.task_type == pb.COMPOSITE and parent.status == pb.PENDING
    assert [c.shard_index for c in parent.children] == [0, 1, 2]
    assert {c.status for c in parent.children} == {pb.WAITING}
    assert dict(parent.progress) == {"WAITING": 3}


def test_the_same_key_with_another_document_is_already_exists_naming_the_first_parent(platform):
    first = platform.stub.SubmitComposite(grpc_request(SHARDS, "k-2"))
    other = {**SHARDS, "completions": 5}
    with pytest.raises(grpc.RpcError) as err:
        platform.stub.SubmitComposite(grpc_request(other, "k-2"))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    (info,) = details_of(err.value)
    assert info.metadata["taskId"] == first.task.task_id


def test_a_dag_with_a_cycle_and_an_unknown_reference_is_invalid_with_every_problem_by_path(
    platform,
):
    with pytest.raises(grpc.RpcError) as err:
        platform.stub.SubmitComposite(grpc_request(CYCLE_AND_UNKNOWN))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (bad,) = details_of(err.value)
    assert isinstance(bad, error_details_pb2.BadRequest)
    fields = {v.field: v.description for v in bad.field_violations}
    assert "no node is named 'ghost'" in fields["nodes.1.dependsOn.1"]
    assert "cycle" in fields["nodes"]
    assert platform.store.tasks == {}, "nothing was stored"


def test_a_task_over_the_payload_limit_inside_a_document_is_resource_exhausted(platform):
    big = {"kind": "GROUP", "children": [shell("true"), shell("#" * 2000)]}
    with pytest.raises(grpc.RpcError) as err:
        platform.stub.SubmitComposite(grpc_request(big))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    (bad,) = details_of(err.value)
    assert [v.field for v in bad.field_violations] == ["children.1.payload"]


def test_a_parents_view_has_children_edges_and_progress_and_a_childs_view_its_parent(platform):
    parent = platform.stub.SubmitComposite(grpc_request(DIAMOND)).task
    ids = {c.node: c.task_id for c in parent.children}
    platform.finish(ids["a"], TaskStatus.SUCCESS, "a\n")
    view = platform.stub.GetTaskInfo(pb.GetTaskInfoRequest(task_id=parent.task_id)).task
    assert [c.node for c in view.children] == ["a", "b", "c", "d"]
    assert [(e.from_task_id, e.to_task_id) for e in view.edges] == [
        (ids["a"], ids["b"]),
        (ids["a"], ids["c"]),
        (ids["b"], ids["d"]),
        (ids["c"], ids["d"]),
    ]
    assert dict(view.progress) == {"SUCCESS": 1, "WAITING": 3}
    child = platform.stub.GetTaskInfo(pb.GetTaskInfoRequest(task_id=ids["c"])).task
    assert (child.parent_id, child.role, child.node) == (parent.task_id, "node", "c")
    assert (child.shard_index, child.shard_total) == (2, 4)
    assert not child.children, "a child lists no tree of its own"


def test_cancel_of_a_parent_ends_every_child_that_had_not_finished(platform):
    parent = platform.stub.SubmitComposite(grpc_request(SHARDS)).task
    done, running, _ = (c.task_id for c in parent.children)
    platform.finish(done, TaskStatus.SUCCESS)
    platform.finish(running, TaskStatus.RUNNING)
    answer = platform.stub.Cancel(pb.CancelRequest(task_id=parent.task_id))
    assert answer.status == pb.CANCELLED and answer.cancelled_from == pb.PENDING
    view = platform.stub.GetTaskInfo(pb.GetTaskInfoRequest(task_id=parent.task_id)).task
    first, second, third = (c.status for c in view.children)
    assert (first, second) == (pb.SUCCESS, pb.CANCELLED)
    assert third in (pb.CANCELLED, pb.SKIPPED)


def test_retry_of_a_failed_parent_is_a_new_parent_that_keeps_the_children_that_succeeded(
    platform,
):
    parent = platform.stub.SubmitComposite(grpc_request(SHARDS)).task
    first, second, third = (c.task_id for c in parent.children)
    platform.finish(first, TaskStatus.SUCCESS)
    platform.finish(second, TaskStatus.FAILED)
    platform.finish(parent.task_id, TaskStatus.FAILED)
    answer = platform.stub.Retry(pb.RetryRequest(task_id=parent.task_id, request_id="r-1"))
    assert answer.created and answer.retry_of == parent.task_id
    view = platform.stub.GetTaskInfo(pb.GetTaskInfoRequest(task_id=answer.new_task_id)).task
    assert view.retry_of == parent.task_id
    kept, *rerun = view.children
    assert (kept.task_id, kept.status) == (first, pb.SUCCESS)
    assert [c.status for c in rerun] == [pb.WAITING, pb.WAITING]
    assert {c.task_id for c in rerun}.isdisjoint({second, third})


def test_retry_of_a_parent_that_has_not_failed_is_failed_precondition(platform):
    parent = platform.stub.SubmitComposite(grpc_request(SHARDS)).task
    with pytest.raises(grpc.RpcError) as err:
        platform.stub.Retry(pb.RetryRequest(task_id=parent.task_id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_plain_submit_of_a_composite_type_is_refused_with_where_to_send_it(platform):
    with pytest.raises(grpc.RpcError) as err:
        platform.stub.Submit(pb.SubmitRequest(task_type=pb.COMPOSITE, payload="{}"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "composite document" in err.value.details()


# -- REST -----------------------------------------------------------------------------------------


def test_post_composites_answers_201_with_location_and_replays_200_for_the_same_key(api):
    headers = {"Idempotency-Key": "rest-1"}
    first = api.post("/api/v1/composites", json=DIAMOND, headers=headers)
    again = api.post("/api/v1/composites", json=DIAMOND, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    body = first.json()
    assert first.headers["location"] == f"/api/v1/tasks/{body['taskId']}"
    assert again.json()["taskId"] == body["taskId"]
    assert body["taskType"] == "COMPOSITE" and body["requestId"] == "rest-1"
    assert [c["node"] for c in body["children"]] == ["a", "b", "c", "d"]
    assert len(body["edges"]) == 4 and body["progress"] == {"WAITING": 4}


def test_the_rest_view_of_a_parent_has_children_edges_and_progress_and_a_child_its_place(
    api, platform
):
    parent = api.post("/api/v1/composites", json=DIAMOND).json()
    a, b = parent["children"][0], parent["children"][1]
    platform.finish(a["taskId"], TaskStatus.FAILED)
    view = api.get(f"/api/v1/tasks/{parent['taskId']}").json()
    assert view["progress"] == {"FAILED": 1, "WAITING": 3}
    assert {"from": a["taskId"], "to": b["taskId"]} in view["edges"]
    assert view["children"][0] == {
        "taskId": a["taskId"],
        "taskName": "echo a",
        "role": "node",
        "shardIndex": 0,
        "node": "a",
        "status": "FAILED",
        "agentId": None,
    }
    child = api.get(f"/api/v1/tasks/{b['taskId']}").json()
    assert child["parentId"] == parent["taskId"]
    assert (child["role"], child["node"], child["shardIndex"], child["shardTotal"]) == (
        "node",
        "b",
        1,
        4,
    )
    assert child["children"] is None and child["pinnedAgent"] is None


def test_a_dag_with_a_cycle_and_an_unknown_reference_is_a_422_listing_both_by_path(api):
    answer = api.post("/api/v1/composites", json=CYCLE_AND_UNKNOWN)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    errors = {e["field"]: e for e in answer.json()["errors"]}
    assert set(errors) == {"nodes.1.dependsOn.1", "nodes"}
    assert errors["nodes.1.dependsOn.1"]["pointer"] == "#/nodes/1/dependsOn/1"


def test_shape_errors_are_a_422_with_every_field_before_anything_is_sent_on(api, platform):
    answer = api.post(
        "/api/v1/composites",
        json={"kind": "SHARDS", "completions": 0, "template": {"payload": ""}, "extra": 1},
    )
    assert answer.status_code == 422
    fields = {e["field"] for e in answer.json()["errors"]}
    assert {"completions", "template.taskType", "template.payload", "extra"} <= fields
    assert platform.store.tasks == {}


def test_a_document_over_its_limits_is_a_413(api):
    big = {"kind": "GROUP", "children": [shell("#" * 2000)]}
    answer = api.post("/api/v1/composites", json=big)
    assert answer.status_code == 413
    assert answer.json()["errors"][0]["field"] == "children.0.payload"


def test_a_composite_body_may_be_larger_than_a_task_body_but_not_unbounded(platform):
    settings = OFFLINE.model_copy(update={"max_payload_bytes": 1000})
    app = create_app(settings, tasks=StubTasks(platform.stub))
    document = {"kind": "GROUP", "children": [shell("#" * 900) for _ in range(30)]}
    body = json.dumps(document)
    assert settings.max_body_bytes < len(body) < settings.max_document_body_bytes
    with http_client(app) as http:
        as_task = http.post("/api/v1/tasks", content=body, headers=_json())
        assert as_task.status_code == 413, "a task's body limit holds on /tasks"
        # Past the link, the document's own limit (16 payloads) is the validator's to say.
        answer = http.post("/api/v1/composites", content=body, headers=_json())
        assert answer.status_code == 413
        assert answer.json()["errors"][0]["field"] == "composite"
        huge = "x" * (settings.max_document_body_bytes + 1)
        refused = http.post("/api/v1/composites", content=huge, headers=_json())
        assert refused.status_code == 413 and "request body may be at most" in refused.text


def _json() -> dict[str, str]:
    return {"content-type": "application/json"}


def test_cancel_and_retry_of_a_parent_over_rest(api, platform):
    parent = api.post("/api/v1/composites", json=SHARDS).json()
    cancelled = api.delete(f"/api/v1/tasks/{parent['taskId']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    view = api.get(f"/api/v1/tasks/{parent['taskId']}").json()
    assert sum(view["progress"].get(s, 0) for s in ("CANCELLED", "SKIPPED")) == 3
    retried = api.post(f"/api/v1/tasks/{parent['taskId']}/retry")
    assert retried.status_code == 201
    new = api.get(retried.headers["location"]).json()
    assert new["retryOf"] == parent["taskId"] and new["progress"] == {"WAITING": 3}


def test_a_parents_retry_sent_again_with_its_idempotency_key_answers_the_same_new_parent(
    api, platform
):
    parent = api.post("/api/v1/composites", json=SHARDS).json()
    api.delete(f"/api/v1/tasks/{parent['taskId']}")
    key = {"Idempotency-Key": "retry-of-the-shards"}
    first = api.post(f"/api/v1/tasks/{parent['taskId']}/retry", headers=key)
    again = api.post(f"/api/v1/tasks/{parent['taskId']}/retry", headers=key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.headers["location"] == again.headers["location"]


# -- the CLI --------------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "api"])
def cli(request, platform, monkeypatch):
    """`tasklab` over either backend, both reaching the same in-memory platform."""
    if request.param == "redis":
        backend = RedisBackend(platform.client)
    else:
        app = create_app(OFFLINE, tasks=StubTasks(platform.stub))
        backend = ApiTaskClient(URL, transport=AppTransport(app))
    monkeypatch.setattr(main, "tasks", lambda environ=None: backend)
    runner = CliRunner()

    def run(*args: str, stdin: str | None = None):
        return runner.invoke(main.app, list(args), input=stdin)

    return run


def test_submit_with_shards_submits_a_shards_composite_of_the_given_task(cli, platform):
    result = cli(
        "submit",
        "--shards",
        "4",
        "--parallelism",
        "2",
        "--max-failed",
        "1",
        "--wait-all",
        "--retries",
        "2",
        "--name",
        "reindex",
        "echo $TASKLAB_SHARD_INDEX",
    )
    assert result.exit_code == 0, result.output
    parent = platform.client.get(result.output.strip())
    spec = CompositeSpec.from_payload(parent.payload)
    assert (spec.kind, spec.completions, spec.parallelism) == (CompositeKind.SHARDS, 4, 2)
    assert (spec.policy.mode.value, spec.policy.max_failed) == ("WAIT_ALL", 1)
    assert spec.template.payload == "echo $TASKLAB_SHARD_INDEX" and spec.template.retry_count == 2
    assert parent.task_name == "reindex"


def test_composite_options_without_shards_are_refused_as_bad_input(cli):
    result = cli("submit", "--parallelism", "2", "true")
    assert result.exit_code == 2 and "only with --shards" in result.output


def test_composite_submits_a_document_from_a_file_or_stdin_once_per_request_id(
    cli, platform, tmp_path
):
    path = tmp_path / "diamond.json"
    path.write_text(json.dumps(DIAMOND))
    first = cli("composite", str(path), "--request-id", "cli-1", "--json")
    again = cli("composite", "-", "--request-id", "cli-1", "--json", stdin=json.dumps(DIAMOND))
    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    one, two = json.loads(first.output), json.loads(again.output)
    assert one["taskId"] == two["taskId"] and (one["created"], two["created"]) == (True, False)


def test_a_bad_document_is_one_line_and_exit_code_2_with_every_problem(cli, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(CYCLE_AND_UNKNOWN))
    result = cli("composite", str(path))
    assert result.exit_code == 2
    assert "nodes.1.dependsOn.1" in result.output and "cycle" in result.output
    broken = cli("composite", "-", stdin="{not json")
    assert broken.exit_code == 2 and "not a JSON document" in broken.output


def test_status_of_a_parent_prints_its_children_edges_and_a_progress_line(cli, platform):
    parent = cli("composite", "-", stdin=json.dumps(DIAMOND)).output.strip()
    tree = platform.composites.tree(parent)
    platform.finish(tree.children[0].task_id, TaskStatus.SUCCESS)
    platform.finish(tree.children[1].task_id, TaskStatus.RUNNING)
    result = cli("status", parent)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    rows = [line.split() for line in lines[lines.index("children:") + 2 :][:4]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("a", "node", "SUCCESS"),
        ("b", "node", "RUNNING"),
        ("c", "node", "WAITING"),
        ("d", "node", "WAITING"),
    ]
    assert "  a -> b" in lines and "  c -> d" in lines
    assert "progress: 1 of 4 children final (WAITING 2, RUNNING 1, SUCCESS 1)" in lines


def test_status_of_a_child_names_its_parent_and_its_place(cli, platform):
    parent = cli("submit", "--shards", "3", "echo hi").output.strip()
    child = platform.composites.tree(parent).children[2]
    result = cli("status", child.task_id)
    assert result.exit_code == 0, result.output
    assert f"parent:   {parent} (shard 2 of 3)" in result.output.splitlines()


def test_status_json_of_a_parent_has_its_tree(cli, platform):
    parent = cli("submit", "--shards", "2", "true").output.strip()
    data = json.loads(cli("status", parent, "--json").output)
    assert [c["shardIndex"] for c in data["children"]] == [0, 1]
    assert data["progress"] == {"WAITING": 2} and data["edges"] == []


def test_cancel_and_retry_of_a_parent_from_the_cli(cli, platform):
    parent = cli("submit", "--shards", "2", "true").output.strip()
    assert cli("cancel", parent).exit_code == 0
    assert platform.client.get(parent).status == TaskStatus.CANCELLED
    retried = cli("retry", parent)
    assert retried.exit_code == 0, retried.output
    new = platform.composites.tree(retried.output.strip())
    assert new.parent.retry_of == parent and len(new.children) == 2


def test_composite_wait_prints_the_final_tree_and_exits_by_the_parents_state(cli, platform):
    def finish_soon() -> None:
        # What the coordinator does once the children ended, a moment after the submit.
        for _ in range(200):  # bounded: 200 x 10 ms
            parents = list(platform.composites.lists)
            if parents:
                for child in platform.composites.lists[parents[0]]:
                    platform.finish(child, TaskStatus.SUCCESS)
                platform.finish(parents[0], TaskStatus.FAILED)
                return
            time.sleep(0.01)

    worker = threading.Thread(target=finish_soon)
    worker.start()
    result = cli("composite", "-", "--wait", "--wait-timeout", "10", stdin=json.dumps(SHARDS))
    worker.join(5)
    assert result.exit_code == 1, result.output
    assert "status:   FAILED" in result.output
    assert "progress: 3 of 3 children final (SUCCESS 3)" in result.output


def test_a_view_with_children_reads_back_as_the_domain_task_and_rows(platform):
    parent = platform.stub.SubmitComposite(grpc_request(SHARDS)).task
    app = create_app(OFFLINE, tasks=StubTasks(platform.stub))
    info = ApiTaskClient(URL, transport=AppTransport(app)).info(parent.task_id)
    assert info.task.task_type == TaskType.COMPOSITE
    assert [c.shard_index for c in info.children] == [0, 1, 2]
    assert info.progress == {"WAITING": 3}


def test_text_no_protobuf_string_can_carry_is_a_422_naming_each_field_not_a_crash(api, platform):
    # JSON's "\ud800": a lone surrogate, valid JSON text, but no UTF-8 (and so no protobuf).
    body = (
        b'{"kind": "DAG", "taskName": "\\ud800", "nodes": [{"name": "a", "task": '
        b'{"taskType": "SHELL", "payload": "echo \\udc00"}, "dependsOn": ["\\ud800"]}]}'
    )
    answer = api.post("/api/v1/composites", content=body, headers=_json())
    assert answer.status_code == 422, answer.text
    fields = {e["field"] for e in answer.json()["errors"]}
    assert fields == {"taskName", "nodes.0.task.payload", "nodes.0.dependsOn.0"}
    assert platform.store.tasks == {}


def test_a_configured_body_limit_holds_for_composites_too_and_auto_gives_them_16_payloads():
    auto = OFFLINE.model_copy(update={"max_payload_bytes": 1000})
    assert auto.max_document_body_bytes == 16 * auto.max_body_bytes
    configured = Settings(api={"security": {"max_body_bytes": 4096}})
    assert configured.max_document_body_bytes == configured.max_body_bytes == 4096


def test_a_parent_with_no_children_yet_shows_an_empty_tree_and_a_listing_shows_none(api):
    # A broadcast has its children only once the coordinator knows the live agents.
    parent = api.post("/api/v1/composites", json={"kind": "BROADCAST", "template": shell("true")})
    assert parent.status_code == 201, parent.text
    body = parent.json()
    assert (body["children"], body["edges"], body["progress"]) == ([], [], {})
    view = api.get(f"/api/v1/tasks/{body['taskId']}").json()
    assert (view["children"], view["progress"]) == ([], {})
    listed = views.task_view(pb.Task(task_type=pb.COMPOSITE, status=pb.PENDING))
    assert listed.children is None and listed.progress is None
