"""Cancel is one atomic step whose answer is the truth, whatever moves the task meanwhile.

A cancel that read the task and then wrote in a second round trip lost to any transition in
between, and `tasklab cancel` printed "cannot cancel: it is PENDING" for a cancellable task.
Every test runs on real Redis and on the in-memory store, which must keep the same contract.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from common import keys
from common.adapters.memory_store import InMemoryTaskStore
from common.adapters.redis_queue import RedisWorkQueue, Rejected
from common.adapters.redis_store import RedisTaskStore
from common.domain.task import TaskSpec
from common.domain.transitions import TaskStatus
from common.ports.task_store import TaskStore
from common.testing.wait import eventually

SPEC = TaskSpec.model_validate({"taskType": "SHELL", "payload": "echo hi"})
S = TaskStatus


@pytest.fixture(params=["redis", "memory"])
def store(request) -> TaskStore:
    if request.param == "memory":
        return InMemoryTaskStore()
    return RedisTaskStore(request.getfixturevalue("redis_client"))


class Hammer:
    """Moves one task PENDING -> SCHEDULED -> PENDING (a new attempt each time) as fast as it
    can, the way a scheduler placing and giving back would, until it is cancelled or has made
    `limit` moves. Each move reads the task first: its own stale writes are simply refused."""

    def __init__(self, store: TaskStore, task_id: str, limit: int = 2000) -> None:
        self.store, self.task_id, self.limit = store, task_id, limit
        self.moves = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(self.limit):
            task = self.store.get(self.task_id)
            if task.status == S.CANCELLED:
                return
            to = S.SCHEDULED if task.status == S.PENDING else S.PENDING
            if self.store.transition(
                self.task_id, to, attempt=task.attempt, actor="hammer"
            ).accepted:
                self.moves += 1

    def __enter__(self) -> Hammer:
        self.thread.start()
        # Cancel only once the task is really moving.
        eventually(lambda: self.moves >= 3, 10, interval=0.001, message="task moving")
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(30)
        assert not self.thread.is_alive()


# --8<-- [start:race]
def test_a_cancel_racing_with_transitions_is_always_accepted_and_says_what_it_cancelled(store):
    for _ in range(40):
        # Given a task whose state and attempt keep changing
        task, _ = store.submit(SPEC)
        with Hammer(store, task.task_id):
            # When it is cancelled mid-flight
            result = store.cancel(task.task_id, actor="cli")

        # Then the cancel is accepted, from the state the task was really in at that instant
        assert (result.accepted, result.reason, result.status) == (True, "ok", "CANCELLED")
        assert result.cancelled_from in ("PENDING", "SCHEDULED")
        now = store.get(task.task_id)
        assert (now.status, now.attempt) == (S.CANCELLED, result.attempt)
        last = store.history(task.task_id)[-1]
        assert (last["state"], last["from"], last["actor"]) == (
            "CANCELLED",
            result.cancelled_from,
            "cli",
        )


# --8<-- [end:race]


def test_cancel_is_idempotent_and_never_touches_a_finished_task(store):
    # Given a cancelled task and a task that succeeded
    cancelled, _ = store.submit(SPEC)
    assert store.cancel(cancelled.task_id).accepted
    done, _ = store.submit(SPEC)
    store.transition(done.task_id, S.RUNNING, attempt=1, actor="agent-1")
    store.transition(done.task_id, S.SUCCESS, attempt=1, actor="agent-1")
    history = store.history(done.task_id)

    # When each is cancelled (again), and a task that does not exist is
    again = store.cancel(cancelled.task_id)
    finished = store.cancel(done.task_id)
    missing = store.cancel("no-such-task")

    # Then the cancelled one says so and stays as it was, the finished one is untouched
    assert again == (True, "already_cancelled", "CANCELLED", 1, "CANCELLED")
    assert finished == (False, "already_final", "SUCCESS", 1, "")
    assert missing == (False, "missing", "", 0, "")
    assert [h["state"] for h in store.history(cancelled.task_id)] == ["PENDING", "CANCELLED"]
    assert store.history(done.task_id) == history


def test_a_cancelled_pending_tasks_queue_message_is_skipped_by_the_agent_that_takes_it(
    redis_client,
):
    # Given two tasks in queue:pending, the first of them cancelled before any agent took it
    store = RedisTaskStore(redis_client)
    first, _ = store.submit(SPEC)
    second, _ = store.submit(SPEC)
    assert store.cancel(first.task_id).cancelled_from == "PENDING"

    # When an agent takes from the queue
    queue = RedisWorkQueue(redis_client, store)
    skipped = queue.claim("agent-1", queue.take_reliably("agent-1", 1))
    taken = queue.claim("agent-1", queue.take_reliably("agent-1", 1))

    # Then the cancelled task's message is dropped without running it, and the next one runs
    assert isinstance(skipped, Rejected) and "CANCELLED" in skipped.reason
    assert taken.task.task_id == second.task_id
    assert store.get(first.task_id).status == S.CANCELLED
    assert redis_client.lrange(keys.processing("agent-1"), 0, -1) == [taken.message.encode()]


def tasklab(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TASKLAB_REDIS_URL": redis_url}
    return subprocess.run(
        [sys.executable, "-m", "common.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_tasklab_cancel_accepts_a_moving_task_and_names_the_state_of_a_finished_one(
    redis_client, redis_url
):
    store = RedisTaskStore(redis_client)
    # Given a task whose state keeps changing
    moving, _ = store.submit(SPEC)
    with Hammer(store, moving.task_id, limit=200_000):
        # When `tasklab cancel` is run on it
        first = tasklab(redis_url, "cancel", moving.task_id)
    # Then it is accepted (never "cannot cancel: it is PENDING"), and again when repeated
    assert (first.returncode, first.stdout.strip()) == (0, "Cancel request accepted."), first
    again = tasklab(redis_url, "cancel", moving.task_id)
    assert (again.returncode, again.stdout.strip()) == (0, "Cancel request accepted."), again

    # and a task that already succeeded is refused with its real state
    done, _ = store.submit(SPEC)
    store.transition(done.task_id, S.RUNNING, attempt=1, actor="agent-1")
    store.transition(done.task_id, S.SUCCESS, attempt=1, actor="agent-1")
    refused = tasklab(redis_url, "cancel", done.task_id)
    assert refused.returncode == 1
    assert f"cannot cancel task {done.task_id}: it is SUCCESS" in refused.stderr
