"""Retention on real Redis: finished tasks go with all their keys; nothing else is ever touched."""

import json
import os
import subprocess
import sys
import time

import pytest

from common import keys
from common.adapters.redis_composite import RedisCompositeStore
from common.adapters.redis_dead_letter import dead_letter_message, dead_letter_stats
from common.adapters.redis_retention import RedisRetention
from common.adapters.redis_scripts import script_source
from common.domain.composite import validate_composite
from common.domain.transitions import TERMINAL_STATES, TaskStatus
from common.testing import eventually

DAY = 86400.0
WEEK = 7 * DAY


def finish(client, task_id: str, to: TaskStatus = TaskStatus.SUCCESS) -> None:
    """PENDING -> RUNNING -> `to` through the store's own transitions, as an agent would."""
    if to != TaskStatus.CANCELLED:
        assert client.store.transition(task_id, TaskStatus.RUNNING, attempt=1, actor="t").accepted
    assert client.store.transition(task_id, to, attempt=1, actor="t").accepted


def keys_of(redis_client, task_id: str) -> set[str]:
    return {k.decode() for k in redis_client.keys(f"*{task_id}*")}


def age(redis_client, task_id: str, seconds: float) -> None:
    """Make a task look created and last changed `seconds` ago (as if the test had waited)."""
    then = time.time() - seconds
    redis_client.hset(keys.task(task_id), mapping={"createdAt": then, "updatedAt": then})
    redis_client.zadd(keys.TASK_INDEX, {task_id: then})


def test_an_old_finished_task_is_removed_with_every_key_it_had(redis_client, client, agent):
    # Given a task that ran on a real agent (hash, history, logs) with a requestId, and the log
    # cursor stage 3's manager keeps
    agent()
    task, _ = client.submit({"taskType": "SHELL", "payload": "echo hi", "requestId": "order-1"})
    eventually(lambda: client.get(task.task_id).status == TaskStatus.SUCCESS, timeout=20)
    redis_client.hset(keys.log_cursor(task.task_id), "1", 1)
    assert keys_of(redis_client, task.task_id) == {
        keys.task(task.task_id),
        keys.history(task.task_id),
        keys.logs(task.task_id),
        keys.log_cursor(task.task_id),
    }
    # When a sweep runs eight days later
    report = RedisRetention(redis_client).sweep(WEEK, now=time.time() + 8 * DAY)
    # Then the task, everything hanging off it, its index entry and its requestId are gone
    assert (report.removed, report.by_status) == (1, {"SUCCESS": 1})
    assert keys_of(redis_client, task.task_id) == set()
    assert redis_client.zscore(keys.TASK_INDEX, task.task_id) is None
    assert not redis_client.exists(keys.request("order-1"))


def test_a_finished_task_younger_than_the_retention_is_kept(redis_client, client):
    task, _ = client.submit({"taskType": "SHELL", "payload": "true"})
    finish(client, task.task_id)
    report = RedisRetention(redis_client).sweep(WEEK, now=time.time() + 6 * DAY)
    assert report.removed == 0
    assert client.get(task.task_id).status == TaskStatus.SUCCESS


# The path from PENDING to every state that is not finished: each must survive any sweep.
PATHS_TO_UNFINISHED = {
    TaskStatus.PENDING: [],
    TaskStatus.SCHEDULED: [TaskStatus.SCHEDULED],
    TaskStatus.DISPATCHED: [TaskStatus.SCHEDULED, TaskStatus.DISPATCHED],
    TaskStatus.RUNNING: [TaskStatus.RUNNING],
}


def test_the_paths_cover_every_state_that_is_not_finished():
    # WAITING is a composite's child's first state, never reached from PENDING: its own test.
    assert set(PATHS_TO_UNFINISHED) | {TaskStatus.WAITING} == set(TaskStatus) - TERMINAL_STATES


def test_an_old_waiting_child_and_its_pending_parent_are_never_removed(redis_client):
    store = RedisCompositeStore(redis_client)
    spec = validate_composite(
        {"kind": "SHARDS", "completions": 2, "template": {"taskType": "SHELL", "payload": "true"}}
    )
    parent, _ = store.submit_composite(spec)
    ids = [parent.task_id, *store.children(parent.task_id)]
    for task_id in ids:
        age(redis_client, task_id, 3650 * DAY)
    before = {t: keys_of(redis_client, t) for t in ids}
    report = RedisRetention(redis_client).sweep(WEEK)
    assert (report.removed, report.kept) == (0, 3)
    assert {t: keys_of(redis_client, t) for t in ids} == before
    assert [t.status for t in store.tasks(ids).values()] == [
        TaskStatus.PENDING,
        TaskStatus.WAITING,
        TaskStatus.WAITING,
    ]


def test_a_task_that_is_not_finished_is_never_removed_whatever_its_age(redis_client, client):
    # Given a task in every unfinished state, and one finished task, all "ten years" old
    unfinished = []
    for path in PATHS_TO_UNFINISHED.values():
        task, _ = client.submit({"taskType": "SHELL", "payload": "true"})
        for to in path:
            assert client.store.transition(task.task_id, to, attempt=1, actor="t").accepted
        unfinished.append(task.task_id)
    failed, _ = client.submit({"taskType": "SHELL", "payload": "false"})
    finish(client, failed.task_id, TaskStatus.FAILED)
    before = {t: keys_of(redis_client, t) for t in unfinished}
    # When sweeps of one entry each run over all of them, and once round again
    retention = RedisRetention(redis_client, batch=1)
    ten_years = time.time() + 3650 * DAY
    removed = sum(retention.sweep(WEEK, 1, now=ten_years).removed for _ in range(12))
    # Then only the finished one went; the others keep every key and their index entry
    assert removed == 1 and client.store.get(failed.task_id) is None
    assert {t: keys_of(redis_client, t) for t in unfinished} == before
    assert [client.get(t).status for t in unfinished] == list(PATHS_TO_UNFINISHED)
    assert redis_client.zcard(keys.TASK_INDEX) == len(unfinished)


def test_sweeps_step_past_old_unfinished_tasks_instead_of_rereading_them(redis_client, client):
    # Given more old running tasks than one sweep looks at, in front of an old finished one
    running = []
    for _ in range(3):
        t, _ = client.submit({"taskType": "SHELL", "payload": "sleep 1"})
        client.store.transition(t.task_id, TaskStatus.RUNNING, attempt=1, actor="t")
        running.append(t.task_id)
    done, _ = client.submit({"taskType": "SHELL", "payload": "true"})
    finish(client, done.task_id)
    retention = RedisRetention(redis_client)
    later = time.time() + 8 * DAY
    # When sweeps of two entries each run one after another
    first = retention.sweep(WEEK, 2, now=later)
    second = retention.sweep(WEEK, 2, now=later)
    third = retention.sweep(WEEK, 2, now=later)
    # Then the second one reaches the finished task behind the kept ones, and the third the end
    assert (first.removed, first.kept, first.done) == (0, 2, False)
    assert (second.removed, second.kept) == (1, 1)
    assert (third.removed, third.done) == (0, True)
    assert all(client.store.get(t) for t in running)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"status": "RUNNING"}, id="requeued-and-running-again"),
        pytest.param({"status": "PENDING"}, id="requeued"),
        pytest.param({"updatedAt": "now"}, id="changed-since-the-read"),
    ],
)
def test_a_task_that_changed_between_the_sweeps_read_and_its_delete_is_kept(
    redis_client, client, change
):
    # Given a finished task that a sweep read as finished and old
    task, _ = client.submit({"taskType": "SHELL", "payload": "true", "requestId": "r-1"})
    finish(client, task.task_id, TaskStatus.FAILED)
    cutoff = time.time() + DAY
    before = keys_of(redis_client, task.task_id)
    # When it changes before the delete runs (as a retried or requeued task would)
    value = {k: repr(time.time() + 2 * DAY) if v == "now" else v for k, v in change.items()}
    redis_client.hset(keys.task(task.task_id), mapping=value)
    script = redis_client.register_script(script_source("retention"))
    removed, reason, _status = script(
        keys=RedisRetention._keys(task.task_id, "r-1"), args=[task.task_id, repr(cutoff), "r-1"]
    )
    # Then the script refuses and every key is still there
    assert int(removed) == 0
    assert reason.decode() == ("recent" if "updatedAt" in change else "not_terminal")
    assert keys_of(redis_client, task.task_id) == before
    assert redis_client.get(keys.request("r-1")).decode() == task.task_id
    assert redis_client.zscore(keys.TASK_INDEX, task.task_id) is not None


def test_an_idempotency_key_goes_only_with_its_own_task(redis_client, client):
    # Given an old finished task and an old running task, each with a requestId, and an old
    # finished task whose requestId key now names a newer task
    old, _ = client.submit({"taskType": "SHELL", "payload": "true", "requestId": "r-old"})
    finish(client, old.task_id)
    live, _ = client.submit({"taskType": "SHELL", "payload": "true", "requestId": "r-live"})
    client.store.transition(live.task_id, TaskStatus.RUNNING, attempt=1, actor="t")
    moved, _ = client.submit({"taskType": "SHELL", "payload": "true", "requestId": "r-moved"})
    finish(client, moved.task_id)
    redis_client.set(keys.request("r-moved"), "a-newer-task")
    # When they are swept
    report = RedisRetention(redis_client).sweep(WEEK, now=time.time() + 8 * DAY)
    # Then the finished tasks' own key went; the running task's and the re-used key stayed
    assert report.removed == 2
    assert not redis_client.exists(keys.request("r-old"))
    assert not redis_client.exists(keys.request_fingerprint("r-old"))
    assert redis_client.get(keys.request("r-live")).decode() == live.task_id
    assert redis_client.hget(keys.request_fingerprint("r-live"), "taskId") == live.task_id.encode()
    assert redis_client.get(keys.request("r-moved")) == b"a-newer-task"
    # And the freed requestId makes a new task next time, as a never-seen one would
    again, created = client.submit({"taskType": "SHELL", "payload": "true", "requestId": "r-old"})
    assert created and again.task_id != old.task_id


def test_an_index_entry_left_by_a_hand_deleted_task_is_cleared_once_old(redis_client, client):
    # Given a finished task whose hash someone deleted with redis-cli, leaving the rest
    task, _ = client.submit({"taskType": "SHELL", "payload": "true"})
    finish(client, task.task_id)
    redis_client.delete(keys.task(task.task_id))
    # When a sweep runs, first too early and then after the retention
    early = RedisRetention(redis_client).sweep(WEEK, now=time.time() + DAY)
    late = RedisRetention(redis_client).sweep(WEEK, now=time.time() + 8 * DAY)
    # Then the leftovers stay until they are old, and then go
    assert (early.removed, late.removed, late.by_status) == (0, 1, {"orphan": 1})
    assert keys_of(redis_client, task.task_id) == set()
    assert redis_client.zcard(keys.TASK_INDEX) == 0


def test_maybe_sweep_runs_at_most_once_per_interval(redis_client, client):
    task, _ = client.submit({"taskType": "SHELL", "payload": "true"})
    finish(client, task.task_id)
    retention = RedisRetention(redis_client, retention=WEEK, interval=3600)
    later = time.time() + 8 * DAY
    first = retention.maybe_sweep(now=later)
    second = retention.maybe_sweep(now=later)
    assert first is not None and first.removed == 1
    assert second is None


def test_the_dead_letter_list_stays_capped_and_counts_what_it_dropped(redis_client):
    # Given a cap of 10, when 25 messages are dead-lettered (each taken off a processing list)
    for n in range(25):
        redis_client.lpush("processing:a", f"bad-{n}")
        dead_letter_message(
            redis_client, f"bad-{n}", "broken", "a", "queue:pending", "processing:a", 10
        )
    # Then the newest 10 are kept, newest first, and the 15 dropped ones are counted
    assert dead_letter_stats(redis_client) == (10, 15)
    kept = [json.loads(e)["message"] for e in redis_client.lrange(keys.DEAD_LETTER, 0, -1)]
    assert kept == [f"bad-{n}" for n in range(24, 14, -1)]
    assert redis_client.llen("processing:a") == 0


def test_the_dead_letter_list_drops_nothing_below_its_cap(redis_client):
    for n in range(3):
        dead_letter_message(redis_client, f"bad-{n}", "broken", "a", "queue:pending", None, 10)
    assert dead_letter_stats(redis_client) == (3, 0)
    assert not redis_client.exists(keys.DEAD_LETTER_STATS)


def tasklab(*args: str, redis_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TASKLAB_REDIS_URL": redis_url}
    return subprocess.run(
        [sys.executable, "-m", "common.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_data_cleanup_removes_finished_tasks_older_than_asked_in_batches(
    redis_url, redis_client, client
):
    # Given three finished tasks 40 days old, a running one as old, and a recent finished one
    old = []
    for to in (TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED):
        t, _ = client.submit({"taskType": "SHELL", "payload": "true"})
        finish(client, t.task_id, to)
        age(redis_client, t.task_id, 40 * DAY)
        old.append(t.task_id)
    running, _ = client.submit({"taskType": "SHELL", "payload": "true"})
    client.store.transition(running.task_id, TaskStatus.RUNNING, attempt=1, actor="t")
    age(redis_client, running.task_id, 40 * DAY)
    recent, _ = client.submit({"taskType": "SHELL", "payload": "true"})
    finish(client, recent.task_id)
    # When a dry run looks first
    dry = tasklab("data", "cleanup", "--older-than", "30d", "--dry-run", redis_url=redis_url)
    # Then it counts what would go and what stays, and removes nothing
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[:2] == [
        "would remove 3 finished task(s) older than 30d (CANCELLED 1, FAILED 1, SUCCESS 1)",
        "would keep 1 older task(s) not finished or changed since (RUNNING 1)",
    ]
    assert redis_client.zcard(keys.TASK_INDEX) == 5
    # When the clean-up runs in batches of two
    out = tasklab("data", "cleanup", "--older-than", "30d", "--batch", "2", redis_url=redis_url)
    # Then it reports progress and the total; only the old finished tasks are gone
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "removed 3 finished task(s) older than 30d"
    assert out.stderr.splitlines() == [
        "batch 1: removed 2, 2 so far",
        "batch 2: removed 1, 3 so far",
    ]
    assert all(client.store.get(t) is None for t in old)
    assert client.get(running.task_id).status == TaskStatus.RUNNING
    assert client.get(recent.task_id).status == TaskStatus.SUCCESS


@pytest.mark.parametrize("bad", ["30x", "-1d", "d", "thirty days"])
def test_data_cleanup_rejects_a_bad_duration_in_one_line(redis_url, bad):
    out = tasklab("data", "cleanup", "--older-than", bad, redis_url=redis_url)
    assert out.returncode == 2
    assert out.stdout == ""
    [line] = out.stderr.splitlines()
    assert line.startswith("error: --older-than: ") and "is not a duration" in line
