"""Cron schedules through the front door of a running platform: the REST API (a real `tasklab
run api` over two providers), the gRPC TaskService and the CLI, with the stage 3 platform under
them, whose scheduler leader fires the schedules on the real clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime

import grpc
import pytest
from google.rpc import error_details_pb2

from common import keys
from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.domain.task import TaskSpec, TaskType
from common.rpc import convert
from common.rpc.errors import SCHEDULE_EXISTS, SCHEDULE_RESOURCE, details_of
from common.rpc.gen import task_service_pb2 as pb
from common.testing import eventually

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
YEARLY = "0 0 1 1 *"  # fires at most once a year: no test here sees it fire by accident


def doc(name: str, **over) -> dict:
    return {
        "name": name,
        "schedule": YEARLY,
        "timeZone": "Europe/Berlin",
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": 120,
        "task": {"taskType": "SHELL", "payload": "echo from-a-schedule"},
        **over,
    }


def tasklab(*args: str, env: dict[str, str]):
    return subprocess.run(
        [sys.executable, "-m", "common.cli.main", *args],
        env={k: v for k, v in os.environ.items() if not k.startswith("TASKLAB_")}
        | {"TASKLAB_ENV": "test"}
        | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_schedule_is_created_with_its_location_and_read_back_with_its_next_fire_times(http):
    created = http.post("/api/v1/schedules", json=doc("report-a"))
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/api/v1/schedules/report-a"
    view = created.json()
    assert (view["name"], view["concurrencyPolicy"], view["startingDeadlineSeconds"]) == (
        "report-a",
        "Forbid",
        120,
    )
    assert (view["successfulJobsHistoryLimit"], view["failedJobsHistoryLimit"]) == (3, 1)
    assert view["status"]["lastScheduleTime"] is None
    # New Year in Berlin is 23:00 UTC the day before.
    assert len(view["nextFireTimes"]) == 5
    assert all(t.endswith("-12-31T23:00:00.000Z") for t in view["nextFireTimes"])
    got = http.get(created.headers["location"], params={"preview": 2})
    assert got.status_code == 200
    assert len(got.json()["nextFireTimes"]) == 2
    names = [s["name"] for s in http.get("/api/v1/schedules").json()["items"]]
    assert "report-a" in names


def test_a_name_taken_is_a_409_and_a_bad_document_lists_every_problem(http):
    assert http.post("/api/v1/schedules", json=doc("report-b")).status_code == 201
    again = http.post("/api/v1/schedules", json=doc("report-b"))
    assert again.status_code == 409
    assert again.headers["content-type"].startswith(PROBLEM)
    assert again.json()["type"] == "/problems/schedule-exists"
    bad = http.post(
        "/api/v1/schedules",
        json={
            "name": "Bad Name",
            "schedule": "*/0 * * * *",
            "timeZone": "Nowhere/City",
            "concurrencyPolicy": "Never",
            "task": {"taskType": "SHELL", "payload": ""},
        },
    )
    assert bad.status_code == 422
    errors = {e["field"]: e for e in bad.json()["errors"]}
    assert {"name", "schedule", "timeZone", "concurrencyPolicy", "task.payload"} <= set(errors)
    assert errors["task.payload"]["pointer"] == "#/task/payload"
    assert "step '0'" in errors["schedule"]["detail"]


def test_pause_resume_and_delete(http):
    http.post("/api/v1/schedules", json=doc("report-c"))
    assert http.post("/api/v1/schedules/report-c/pause").json()["suspend"] is True
    assert http.post("/api/v1/schedules/report-c/resume").json()["suspend"] is False
    assert http.delete("/api/v1/schedules/report-c").status_code == 204
    gone = http.get("/api/v1/schedules/report-c")
    assert gone.status_code == 404
    assert gone.json()["type"] == "/problems/schedule-not-found"
    assert http.post("/api/v1/schedules/report-c/pause").status_code == 404
    assert http.delete("/api/v1/schedules/report-c").status_code == 404


def test_a_preview_creates_nothing_and_names_a_bad_field(http):
    ok = http.get(
        "/api/v1/schedule-preview",
        params={"schedule": "30 2 * * *", "timeZone": "America/New_York", "count": 3},
    )
    assert ok.status_code == 200, ok.text
    times = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in ok.json()["fireTimes"]]
    assert len(times) == 3 and times == sorted(times)
    bad = http.get("/api/v1/schedule-preview", params={"schedule": "* * *", "timeZone": "X/Y"})
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"schedule", "timeZone"}


def test_grpc_names_a_taken_name_and_a_missing_schedule_in_its_details(rest, proxy):
    # `rest` starts the providers the proxy finds, so the test also runs on its own.
    spec = pb.ScheduleSpec(
        name="grpc-a",
        schedule=YEARLY,
        task=pb.TaskSpec(task_type=pb.SHELL, payload="echo grpc"),
    )
    made = proxy.create_schedule(spec)
    assert made.spec.name == "grpc-a" and len(made.next_fire_times) == 5
    with pytest.raises(grpc.RpcError) as taken:
        proxy.create_schedule(spec)
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    (info,) = [d for d in details_of(taken.value) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert info.reason == SCHEDULE_EXISTS
    with pytest.raises(grpc.RpcError) as missing:
        proxy.get_schedule("no-such-schedule")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    resources = [
        d for d in details_of(missing.value) if isinstance(d, error_details_pb2.ResourceInfo)
    ]
    assert resources[0].resource_type == SCHEDULE_RESOURCE
    with pytest.raises(grpc.RpcError) as bad:
        proxy.preview_schedule("61 * * * *", "UTC", 3)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert proxy.delete_schedule("grpc-a") is not None


def test_the_cli_prints_the_same_through_the_api_as_from_redis(rest, stage4):
    api = {"TASKLAB_API_URL": rest}
    local = {"TASKLAB_REDIS_URL": stage4.env["TASKLAB_REDIS_URL"]}
    made = tasklab(
        "schedule", "create", "cli-a", "--cron", YEARLY, "--payload", "echo cli",
        "--policy", "Replace", "--tz", "Asia/Tokyo", env=api,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "created schedule cli-a" in made.stdout
    assert "-01-01 00:00 JST" in made.stdout  # New Year in Tokyo, shown in its zone
    over_api = tasklab("schedule", "show", "cli-a", "--json", env=api)
    from_redis = tasklab("schedule", "show", "cli-a", "--json", env=local)
    assert over_api.returncode == from_redis.returncode == 0, over_api.stderr + from_redis.stderr
    assert json.loads(over_api.stdout) == json.loads(from_redis.stdout)
    listed = tasklab("schedule", "list", env=api)
    assert "cli-a" in listed.stdout and "Replace" in listed.stdout
    assert tasklab("schedule", "pause", "cli-a", env=api).returncode == 0
    assert "paused" in tasklab("schedule", "list", env=local).stdout
    assert tasklab("schedule", "resume", "cli-a", env=local).returncode == 0
    taken = tasklab("schedule", "create", "cli-a", "--cron", YEARLY, "--payload", "x", env=api)
    assert taken.returncode == 1 and "exists" in taken.stderr
    bad = tasklab("schedule", "create", "cli-b", "--cron", "* * *", "--payload", "", env=api)
    assert bad.returncode == 2
    assert "schedule:" in bad.stderr and "task.payload:" in bad.stderr
    assert tasklab("schedule", "delete", "cli-a", env=api).returncode == 0
    missing = tasklab("schedule", "show", "cli-a", env=local)
    assert missing.returncode == 1 and "No such schedule" in missing.stderr


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FIRE = datetime.fromisoformat("2026-11-29T21:40:00+00:00").timestamp()


def test_a_runs_schedule_and_a_traced_tasks_trace_show_over_grpc_rest_and_the_cli(
    http, proxy, rest, stage4
):
    # Given a task submitted in a trace, and one written as the leader's fire writes a run
    # (the same task hash, with the schedule's name and the fire time it belongs to)
    client = redis_client(stage4.env["TASKLAB_REDIS_URL"])
    store = RedisTaskStore(client)
    shell = TaskType.SHELL
    traced, _ = store.submit(
        TaskSpec(task_type=shell, payload="echo traced"), traceparent=TRACEPARENT
    )
    run, _ = store.submit(TaskSpec(task_type=shell, payload="echo a run"))
    client.hset(
        keys.task(run.task_id), mapping={"scheduleId": "views-a", "scheduledFor": repr(FIRE)}
    )
    trace_id = TRACEPARENT.split("-")[1]
    # Then gRPC carries them...
    grpc_run = proxy.get_task_info(run.task_id).task
    assert grpc_run.schedule_id == "views-a" and convert.seconds(grpc_run.scheduled_for) == FIRE
    assert proxy.get_task_info(traced.task_id).task.trace_id == trace_id
    # ...REST shows them...
    view = http.get(f"/api/v1/tasks/{run.task_id}").json()
    assert (view["scheduleId"], view["scheduledFor"]) == ("views-a", "2026-11-29T21:40:00.000Z")
    assert http.get(f"/api/v1/tasks/{traced.task_id}").json()["traceId"] == trace_id
    # ...a listing by schedule finds the run alone, over REST and gRPC...
    listed = http.get("/api/v1/tasks", params={"scheduleId": "views-a"}).json()["items"]
    assert [t["taskId"] for t in listed] == [run.task_id]
    page = proxy.list(pb.ListRequest(schedule_id="views-a"))
    assert [t.task_id for t in page.tasks] == [run.task_id]
    # ...and tasklab status prints them, through the API as from Redis
    api = {"TASKLAB_API_URL": rest}
    for env in (api, {"TASKLAB_REDIS_URL": stage4.env["TASKLAB_REDIS_URL"]}):
        shown = tasklab("status", run.task_id, env=env)
        assert shown.returncode == 0, shown.stderr
        assert "schedule: views-a (fired for 2026-11-29 21:40:00 UTC)" in shown.stdout
    assert f"traceId:  {trace_id}" in tasklab("status", traced.task_id, env=api).stdout


@pytest.mark.slow
def test_a_schedule_fires_on_the_real_clock_and_its_run_succeeds(http, stage4):
    made = http.post(
        "/api/v1/schedules",
        json=doc("every-minute", schedule="* * * * *", concurrencyPolicy="Allow"),
    )
    assert made.status_code == 201, made.text
    first = datetime.fromisoformat(made.json()["nextFireTimes"][0].replace("Z", "+00:00"))

    def fired():
        status = http.get("/api/v1/schedules/every-minute").json()["status"]
        return status["lastRunId"] and status

    status = eventually(fired, 75, interval=0.5, message="the schedule fired")
    run = http.get(f"/api/v1/tasks/{status['lastRunId']}")
    assert run.status_code == 200
    assert run.json()["scheduleId"] == "every-minute"
    assert run.json()["scheduledFor"] == made.json()["nextFireTimes"][0]
    eventually(
        lambda: http.get(f"/api/v1/tasks/{status['lastRunId']}").json()["status"] == "SUCCESS",
        30,
        message="its run succeeded",
    )
    task = stage4.tasks.get(status["lastRunId"])
    assert task.schedule_id == "every-minute"
    assert task.scheduled_for == first.timestamp()
    http.delete("/api/v1/schedules/every-minute")
