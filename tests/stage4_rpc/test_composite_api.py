"""Composite tasks through the front door of a running platform: the REST API (a real `tasklab
run api` process over two real providers), the gRPC TaskService and the CLI, with the stage 3
platform under them (the scheduler's leader runs the composite coordinator; two agents run
the children).

Each kind is submitted and watched to its end; the parent's view shows its tree; a bad DAG is
refused with every problem; an Idempotency-Key makes one parent of two submits; cancelling a
running parent kills its running children; retrying a failed parent reruns only the children
that failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import httpx
import pytest

from common.cli.remote import epoch
from common.rpc.errors import details_of
from common.rpc.gen import task_service_pb2 as pb
from common.testing import eventually

pytestmark = pytest.mark.integration

FINAL = {"SUCCESS", "FAILED", "CANCELLED", "SKIPPED"}
PROBLEM = "application/problem+json"


def shell(payload: str, **fields) -> dict:
    return {"taskType": "SHELL", "payload": payload, **fields}


def python(source: str, **fields) -> dict:
    return {"taskType": "PYTHON_SCRIPT", "payload": source, **fields}


def marker() -> str:
    return f"composite-{uuid.uuid4().hex[:8]}"


def submit(http: httpx.Client, document: dict, **kwargs) -> dict:
    response = http.post("/api/v1/composites", json=document, **kwargs)
    assert response.status_code == 201, response.text
    return response.json()


def view(http: httpx.Client, task_id: str) -> dict:
    response = http.get(f"/api/v1/tasks/{task_id}")
    assert response.status_code == 200, response.text
    return response.json()


def final(http: httpx.Client, task_id: str, timeout: float = 60.0) -> dict:
    def done():
        seen = view(http, task_id)
        return seen if seen["status"] in FINAL else None

    return eventually(done, timeout, interval=0.2, message=f"composite {task_id} final")


def children(http: httpx.Client, parent: dict) -> list[dict]:
    """Each child's own view, in the parent's listed order."""
    return [view(http, c["taskId"]) for c in parent["children"]]


def running_spans(child: dict) -> tuple[float, float]:
    """When a child started running and when it ended, from its timeline."""
    states = {e["state"]: epoch(e["at"]) for e in child["timeline"]}
    return states["RUNNING"], states[child["status"]]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        running += step
        most = max(most, running)
    return most


# -- every kind, to its end ----------------------------------------------------------------------
def test_shards_4_with_parallelism_2_give_each_child_its_index_and_never_run_more_than_2(http):
    name = marker()
    parent = submit(
        http,
        {
            "kind": "SHARDS",
            "taskName": name,
            "completions": 4,
            "parallelism": 2,
            # Long enough that two agents with room for four would overlap them all.
            "template": shell('echo "shard $TASKLAB_SHARD_INDEX of $TASKLAB_SHARD_TOTAL"; sleep 1'),
        },
    )
    assert parent["taskType"] == "COMPOSITE" and parent["taskName"] == name
    assert [c["shardIndex"] for c in parent["children"]] == [0, 1, 2, 3]
    done = final(http, parent["taskId"])
    assert done["status"] == "SUCCESS", done
    assert done["progress"] == {"SUCCESS": 4}
    shards = children(http, done)
    assert [c["result"] for c in shards] == [f"shard {i} of 4\n" for i in range(4)]
    assert {(c["parentId"], c["role"], c["shardTotal"]) for c in shards} == {
        (parent["taskId"], "shard", 4)
    }
    assert most_at_once([running_spans(c) for c in shards]) <= 2


def test_a_group_with_a_reduce_ends_with_the_reduces_result(http):
    parent = submit(
        http,
        {
            "kind": "GROUP",
            "children": [shell("echo 1"), shell("echo 2"), python("print(3)")],
            "reduce": python(
                "import json, os\n"
                "rows = json.loads(os.environ['TASKLAB_INPUT'])\n"
                "print(sum(int(r['result']) for r in rows))"
            ),
        },
    )
    done = final(http, parent["taskId"])
    assert done["status"] == "SUCCESS", done
    assert done["result"].strip() == "6"
    assert [c["role"] for c in done["children"]] == ["child", "child", "child", "reduce"]


def test_a_map_reduce_counts_the_words_of_the_items_its_map_step_printed(http):
    parent = submit(
        http,
        {
            "kind": "MAP_REDUCE",
            "map": python(
                "import json\n"
                "print('the map step may log first')\n"
                "print(json.dumps(['a b c', 'd e', 'f']))"
            ),
            "template": python(
                "import json, os\nprint(len(json.loads(os.environ['TASKLAB_INPUT']).split()))"
            ),
            "reduce": python(
                "import json, os\n"
                "rows = json.loads(os.environ['TASKLAB_INPUT'])\n"
                "print(sum(int(r['result']) for r in rows))"
            ),
        },
    )
    done = final(http, parent["taskId"])
    assert done["status"] == "SUCCESS", done
    assert done["result"].strip() == "6"
    roles = [c["role"] for c in done["children"]]
    assert roles == ["map", "item", "item", "item", "reduce"], "the reduce step stays last"
    items = [c for c in children(http, done) if c["role"] == "item"]
    assert sorted(c["result"].strip() for c in items) == ["1", "2", "3"]


def test_a_broadcast_runs_once_on_each_live_agent_pinned_to_it(http):
    alive = sorted(a["agentId"] for a in http.get("/api/v1/agents").json()["items"] if a["alive"])
    assert len(alive) == 2, alive
    parent = submit(
        http, {"kind": "BROADCAST", "template": shell("echo index $TASKLAB_SHARD_INDEX")}
    )
    done = final(http, parent["taskId"])
    assert done["status"] == "SUCCESS", done
    runs = children(http, done)
    assert sorted(c["pinnedAgent"] for c in runs) == alive
    assert all(c["agentId"] == c["pinnedAgent"] for c in runs), runs
    assert sorted(c["result"] for c in runs) == ["index 0\n", "index 1\n"]


def test_a_dag_runs_by_its_trigger_rules_and_its_view_shows_the_edges(http, proxy):
    document = {
        "kind": "DAG",
        "nodes": [
            {"name": "a", "task": shell("echo a")},
            {"name": "b", "task": shell("exit 3"), "dependsOn": ["a"]},
            {"name": "c", "task": shell("echo c"), "dependsOn": ["a"]},
            {"name": "d", "task": shell("echo d"), "dependsOn": ["b", "c"]},
            {
                "name": "alert",
                "task": shell("echo b failed"),
                "dependsOn": ["b"],
                "trigger": "ONE_FAILED",
            },
        ],
    }
    parent = submit(http, document)
    done = final(http, parent["taskId"])
    states = {c["node"]: c["status"] for c in done["children"]}
    assert states == {
        "a": "SUCCESS",
        "b": "FAILED",
        "c": "SUCCESS",
        "d": "SKIPPED",
        "alert": "SUCCESS",
    }
    # A DAG waits for every branch (WAIT_ALL), then fails for its failed node.
    assert done["status"] == "FAILED" and "failed" in done["error"], done
    assert done["progress"] == {"SUCCESS": 3, "FAILED": 1, "SKIPPED": 1}
    ids = {c["node"]: c["taskId"] for c in done["children"]}
    expected = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("b", "alert")]
    assert done["edges"] == [{"from": ids[u], "to": ids[d]} for u, d in expected]
    skipped = view(http, ids["d"])
    assert any("'b'" in (e["reason"] or "") for e in skipped["timeline"]), skipped["timeline"]
    # The same tree over gRPC.
    tree = proxy.get_task_info(parent["taskId"]).task
    assert [(e.from_task_id, e.to_task_id) for e in tree.edges] == [
        (ids[u], ids[d]) for u, d in expected
    ]
    assert dict(tree.progress) == done["progress"]


def test_submit_composite_over_grpc_runs_a_group_and_get_task_info_has_its_tree(proxy):
    name = marker()
    request = pb.SubmitCompositeRequest(
        spec=pb.CompositeSpec(
            kind=pb.GROUP,
            task_name=name,
            children=[
                pb.TaskSpec(task_type=pb.SHELL, payload="echo one"),
                pb.TaskSpec(task_type=pb.SHELL, payload="echo two"),
            ],
        ),
        request_id=name,
    )
    answer = proxy.submit_composite(request)
    assert answer.created and answer.task.task_type == pb.COMPOSITE
    assert [c.status for c in answer.task.children] == [pb.WAITING, pb.WAITING]
    assert proxy.submit_composite(request).task.task_id == answer.task.task_id

    def done():
        task = proxy.get_task_info(answer.task.task_id).task
        return task if task.status in (pb.SUCCESS, pb.FAILED, pb.CANCELLED) else None

    task = eventually(done, 60, interval=0.2, message="the gRPC composite finished")
    assert task.status == pb.SUCCESS and task.result == "2 of 2 children succeeded"
    assert [c.status for c in task.children] == [pb.SUCCESS, pb.SUCCESS]
    child = proxy.get_task_info(task.children[1].task_id).task
    assert (child.parent_id, child.role, child.shard_index) == (task.task_id, "child", 1)
    assert child.result == "two\n"


# -- refusals and idempotency --------------------------------------------------------------------
CYCLE_AND_UNKNOWN = {
    "kind": "DAG",
    "nodes": [
        {"name": "a", "task": shell("echo a"), "dependsOn": ["c"]},
        {"name": "b", "task": shell("echo b"), "dependsOn": ["a", "ghost"]},
        {"name": "c", "task": shell("echo c"), "dependsOn": ["b"]},
    ],
}


def test_a_dag_with_a_cycle_and_an_unknown_reference_is_refused_with_every_problem(http, proxy):
    response = http.post("/api/v1/composites", json=CYCLE_AND_UNKNOWN)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    errors = {e["field"]: e["detail"] for e in response.json()["errors"]}
    assert "no node is named 'ghost'" in errors["nodes.1.dependsOn.1"]
    assert "cycle" in errors["nodes"] and "a -> " in errors["nodes"]
    request = pb.SubmitCompositeRequest(
        spec=pb.CompositeSpec(
            kind=pb.DAG,
            nodes=[
                pb.DagNode(
                    name=n["name"],
                    task=pb.TaskSpec(task_type=pb.SHELL, payload=n["task"]["payload"]),
                    depends_on=n["dependsOn"],
                )
                for n in CYCLE_AND_UNKNOWN["nodes"]
            ],
        )
    )
    with pytest.raises(grpc.RpcError) as err:
        proxy.submit_composite(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (bad,) = details_of(err.value)
    assert {v.field for v in bad.field_violations} == set(errors)


def test_the_same_idempotency_key_twice_makes_one_parent_and_another_document_a_409(http):
    name = marker()
    document = {"kind": "SHARDS", "taskName": name, "completions": 2, "template": shell("true")}
    headers = {"Idempotency-Key": name}
    first = http.post("/api/v1/composites", json=document, headers=headers)
    again = http.post("/api/v1/composites", json=document, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert first.json()["taskId"] == again.json()["taskId"]
    assert first.headers["location"] == f"/api/v1/tasks/{first.json()['taskId']}"
    listed = http.get("/api/v1/tasks", params={"name": name, "type": "COMPOSITE"}).json()
    assert [t["taskId"] for t in listed["items"]] == [first.json()["taskId"]]
    other = http.post("/api/v1/composites", json={**document, "completions": 3}, headers=headers)
    assert other.status_code == 409 and other.json()["type"] == "/problems/idempotency-conflict"
    assert final(http, first.json()["taskId"])["status"] == "SUCCESS"


# -- cancel and retry -----------------------------------------------------------------------------
def test_cancelling_a_running_parent_cancels_its_children_and_kills_the_running_ones(
    http, tmp_path
):
    pids = tmp_path / "pids"
    pids.mkdir()
    parent = submit(
        http,
        {
            "kind": "SHARDS",
            "completions": 3,
            "parallelism": 2,
            "template": shell(
                f"echo $$ > {pids}/$TASKLAB_SHARD_INDEX; exec sleep 120", executionTimeout=300
            ),
        },
    )

    def two_running():
        seen = view(http, parent["taskId"])
        running = [c for c in seen["children"] if c["status"] == "RUNNING"]
        return running if len(running) == 2 and len(list(pids.iterdir())) == 2 else None

    running = eventually(two_running, 60, interval=0.2, message="two shards running")
    started = {int(p.read_text()) for p in pids.iterdir()}
    cancelled = http.delete(f"/api/v1/tasks/{parent['taskId']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    done = final(http, parent["taskId"], timeout=10)
    assert done["status"] == "CANCELLED"

    def all_ended():
        states = {c["taskId"]: c["status"] for c in view(http, parent["taskId"])["children"]}
        return states if set(states.values()) <= {"CANCELLED", "SKIPPED"} else None

    states = eventually(all_ended, 30, interval=0.2, message="every child ended")
    assert all(states[c["taskId"]] == "CANCELLED" for c in running)

    def killed():
        for pid in started:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            return False
        return True

    eventually(killed, 30, interval=0.2, message=f"the running shards' processes {started} gone")
    assert len(list(pids.iterdir())) == 2, "the third shard never started"


def test_retrying_a_failed_parent_reruns_only_the_children_that_failed(http, tmp_path):
    flag = tmp_path / "fixed"
    parent = submit(
        http,
        {
            "kind": "GROUP",
            "failurePolicy": {"mode": "WAIT_ALL", "maxFailed": 0},
            "children": [
                shell("echo ran at $(date +%s%N)"),
                shell(f"test -e {flag} || exit 3; echo fixed"),
            ],
        },
    )
    failed = final(http, parent["taskId"])
    assert failed["status"] == "FAILED" and "1 of 2 children failed" in failed["error"], failed
    kept_before, broken = children(http, failed)
    flag.touch()
    retried = http.post(f"/api/v1/tasks/{parent['taskId']}/retry")
    assert retried.status_code == 201, retried.text
    new_id = retried.json()["newTaskId"]
    assert retried.json()["retryOf"] == parent["taskId"]
    done = final(http, new_id)
    assert done["status"] == "SUCCESS" and done["retryOf"] == parent["taskId"], done
    kept, rerun = children(http, done)
    # The child that succeeded is the same task, not run again.
    assert kept["taskId"] == kept_before["taskId"]
    assert (kept["result"], kept["attempt"]) == (kept_before["result"], kept_before["attempt"])
    assert kept["timeline"] == kept_before["timeline"]
    # The one that failed ran again as a new task recording what it retries.
    assert rerun["taskId"] != broken["taskId"] and rerun["retryOf"] == broken["taskId"]
    assert rerun["status"] == "SUCCESS" and rerun["result"] == "fixed\n"
    assert view(http, parent["taskId"])["status"] == "FAILED", "the old parent stays final"


# -- the CLI, over the API and over Redis ---------------------------------------------------------
def tasklab(env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 90):
    return subprocess.run(
        [sys.executable, "-m", "common.cli.main", *args],
        env={k: v for k, v in os.environ.items() if not k.startswith("TASKLAB_")}
        | {"TASKLAB_ENV": "test"}
        | env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(params=["api", "redis"])
def cli_env(request, rest, stage4) -> dict[str, str]:
    if request.param == "api":
        # Nothing listens at this Redis: every verb must have gone through the API.
        return {"TASKLAB_API_URL": rest, "TASKLAB_REDIS_URL": "redis://127.0.0.1:1/0"}
    return {"TASKLAB_REDIS_URL": stage4.env["TASKLAB_REDIS_URL"]}


def test_the_cli_submits_shards_and_a_document_and_prints_their_trees(cli_env, tmp_path: Path):
    shards = tasklab(
        cli_env, "submit", "--shards", "2", "--wait", "--wait-timeout", "60", "echo hi"
    )
    assert shards.returncode == 0, shards.stdout + shards.stderr
    assert "progress: 2 of 2 children final (SUCCESS 2)" in shards.stdout.splitlines()
    document = tmp_path / "dag.json"
    document.write_text(
        json.dumps(
            {
                "kind": "DAG",
                "nodes": [
                    {"name": "first", "task": shell("echo 1")},
                    {"name": "then", "task": shell("echo 2"), "dependsOn": ["first"]},
                ],
            }
        )
    )
    submitted = tasklab(cli_env, "composite", str(document), "--request-id", marker())
    assert submitted.returncode == 0, submitted.stderr
    parent_id = submitted.stdout.strip()

    def finished():
        shown = tasklab(cli_env, "status", parent_id)
        return shown.stdout if "status:   SUCCESS" in shown.stdout else None

    out = eventually(finished, 60, interval=0.5, message="the DAG finished").splitlines()
    assert "  first -> then" in out and "progress: 2 of 2 children final (SUCCESS 2)" in out
    as_json = json.loads(tasklab(cli_env, "status", parent_id, "--json").stdout)
    child = as_json["children"][1]["taskId"]
    shown = tasklab(cli_env, "status", child)
    assert f"parent:   {parent_id} (node then)" in shown.stdout.splitlines()
