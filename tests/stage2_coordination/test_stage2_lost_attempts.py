"""Failover re-runs are bounded: a task that keeps taking its agent down ends FAILED.

Without a bound, a task that exhausts its agent's memory (or kills it some other way) is lost
with its agent, re-queued as a new attempt, placed on the next agent, and takes that one down
too, forever. Each run lost while RUNNING is counted in the task hash (`lostAttempts`) by the
same script that gives the task back; at `max_lost_attempts` the task ends FAILED instead.
"""

from __future__ import annotations

from collections import Counter

from common import keys
from common.adapters.redis_agent import RedisListIntake, ReliableClaim
from common.adapters.redis_dispatch import RedisDispatcher, Scheduled
from common.adapters.redis_queue import Claim, RedisWorkQueue
from common.adapters.redis_store import RedisTaskStore
from common.domain.transitions import TaskStatus
from common.testing.wait import eventually

HAND_PUSHED = '{"taskType":"SHELL","payload":"echo hi"}'


def dispatch_to(dispatcher, redis_client, agent_id: str, raw: str) -> Scheduled:
    redis_client.lpush(keys.PENDING_QUEUE, raw)
    scheduled = dispatcher.schedule(dispatcher.take(1), 5, "scheduler:test")
    assert isinstance(scheduled, Scheduled), scheduled
    assert dispatcher.dispatch(scheduled, agent_id, 5, "scheduler:test").accepted
    return scheduled


def start_on(redis_client, store, agent_id: str) -> Claim:
    queue = RedisWorkQueue(
        redis_client, store, source=keys.agent_tasks(agent_id), requeue_to=keys.PENDING_QUEUE
    )
    claim = queue.claim(agent_id, queue.take_reliably(agent_id, 1))
    assert isinstance(claim, Claim), claim
    return claim


def test_a_task_lost_running_with_its_agent_max_times_ends_failed_and_is_not_queued_again(
    redis_client,
):
    # Given the default limit of 3, and a task that each agent it runs on dies with
    store = RedisTaskStore(redis_client)
    dispatcher = RedisDispatcher(redis_client, store)
    assert dispatcher.failover.max_lost_attempts == 3
    dispatcher.raise_fence(5)
    raw = HAND_PUSHED
    results = []
    for n in range(1, 4):
        agent_id = f"agent-{n}"
        scheduled = dispatch_to(dispatcher, redis_client, agent_id, raw)
        task_id = scheduled.task.task_id
        start_on(redis_client, store, agent_id)
        # When its agent is lost while it runs (the leader fails the agent over)
        results.append(dispatcher.reap_agent(agent_id, "scheduler:test", epoch=5, incarnation=0))
        raw = (redis_client.lindex(keys.PENDING_QUEUE, 0) or b"").decode()
        redis_client.delete(keys.PENDING_QUEUE)

    # Then the first two losses re-queue it, the third ends it FAILED, queued nowhere
    assert results == [(1, 0), (1, 0), (0, 1)]
    assert raw == ""
    task = store.get(task_id)
    assert (task.status, task.attempt) == (TaskStatus.FAILED, 3)
    fields = {k.decode(): v.decode() for k, v in redis_client.hgetall(keys.task(task_id)).items()}
    assert fields["lostAttempts"] == "3"
    assert fields["error"] == "lost 3 times with its agent"
    last = store.history(task_id)[-1]
    assert (last["state"], last["from"], last["reason"]) == (
        "FAILED",
        "RUNNING",
        "lost 3 times with its agent",
    )


def test_a_dispatched_task_whose_agent_is_lost_before_it_starts_is_not_counted(redis_client):
    # Given a task dispatched to agent-1, which dies before taking it
    store = RedisTaskStore(redis_client)
    dispatcher = RedisDispatcher(redis_client, store, max_lost_attempts=1)
    dispatcher.raise_fence(5)
    task_id = dispatch_to(dispatcher, redis_client, "agent-1", HAND_PUSHED).task.task_id

    # When agent-1 is failed over, even with a limit of one lost run
    assert dispatcher.reap_agent("agent-1", "scheduler:test", epoch=5, incarnation=0) == (1, 0)

    # Then the task is simply queued again: it never ran, so it cannot have killed anyone
    task = store.get(task_id)
    assert (task.status, task.attempt) == (TaskStatus.PENDING, 2)
    assert redis_client.hget(keys.task(task_id), "lostAttempts") is None


def test_a_task_that_keeps_killing_its_agent_ends_failed_after_max_lost_attempts(
    scheduler, agent, probe
):
    # Given a scheduler and three agents, with failover re-runs bounded at 2
    settings = {"max_lost_attempts": 2}
    scheduler("sched-a", **settings)
    agents = {name: agent(name, **settings) for name in ("agent-1", "agent-2", "agent-3")}
    eventually(lambda: len(probe.live_agents()) == 3, 15, message="agents registered")

    # When a task runs, and every agent it runs on dies with it (kill -9 of that agent, each
    # time the task goes RUNNING: what an out-of-memory kill would do)
    payload = probe.counting_payload("killer", "sleep 20")
    task, _ = probe.tasks.submit({"taskType": "SHELL", "payload": payload})
    killed: list[str] = []
    for attempt in (1, 2):

        def running_on(attempt=attempt) -> str | None:
            t = probe.tasks.get(task.task_id)
            if t.status == TaskStatus.RUNNING and t.attempt == attempt:
                return t.agent_id
            return None

        victim = eventually(running_on, 30, message=f"attempt {attempt} RUNNING")
        eventually(lambda a=attempt: probe.runs()["killer"] >= a, 10, message="payload started")
        agents[victim].kill()
        killed.append(victim)

    # Then after the second loss the task ends FAILED with that reason, and runs no more
    done = eventually(
        lambda: (t := probe.tasks.get(task.task_id)).status == TaskStatus.FAILED and t,
        30,
        message="task FAILED",
    )
    assert done.error == "lost 2 times with its agent"
    assert done.attempt == 2
    history = probe.history(task.task_id)
    assert [h["state"] for h in history if h["state"] in ("RUNNING", "FAILED")] == [
        "RUNNING",
        "RUNNING",
        "FAILED",
    ]
    assert history[-1]["reason"] == "lost 2 times with its agent"
    assert len(set(killed)) == 2
    assert probe.runs()["killer"] == 2
    assert probe.redis.llen(keys.PENDING_QUEUE) == 0


def test_a_live_agent_gives_back_what_its_lists_hold_beyond_its_running_attempts(redis_client):
    # Given agent-1 with three entries on its processing list: one it runs (claimed, held),
    # one a take moved there whose answer it never heard (DISPATCHED), and one a take and a
    # claim made RUNNING for it unheard (a Redis frozen past the socket timeout)
    store = RedisTaskStore(redis_client)
    dispatcher = RedisDispatcher(redis_client, store, max_lost_attempts=1)
    dispatcher.raise_fence(5)
    intake = RedisListIntake(
        RedisWorkQueue(
            redis_client, store, source=keys.agent_tasks("agent-1"), requeue_to=keys.PENDING_QUEUE
        ),
        "agent-1",
        ReliableClaim(),
    )
    ids = []
    for _ in range(3):
        ids.append(dispatch_to(dispatcher, redis_client, "agent-1", HAND_PUSHED).task.task_id)
    held = start_on(redis_client, store, "agent-1")
    unheard_running = start_on(redis_client, store, "agent-1")
    intake.queue.take_reliably("agent-1", 1)  # moved, never claimed
    assert redis_client.llen(keys.processing("agent-1")) == 3

    # When the agent reconciles, holding only the attempt it runs
    given = intake.reconcile(Counter({held.message: 1}))

    # Then the two it does not run go back (a new attempt), not counted as lost even with a
    # limit of one; the one it runs is untouched, and stays on its list
    assert given == 2
    assert redis_client.lrange(keys.processing("agent-1"), 0, -1) == [held.message.encode()]
    assert (store.get(held.task.task_id).status, store.get(held.task.task_id).attempt) == (
        TaskStatus.RUNNING,
        1,
    )
    for task_id in set(ids) - {held.task.task_id}:
        task = store.get(task_id)
        assert (task.status, task.attempt) == (TaskStatus.PENDING, 2)
        assert redis_client.hget(keys.task(task_id), "lostAttempts") is None
    last = store.history(unheard_running.task.task_id)[-1]
    assert (last["from"], last["state"]) == ("RUNNING", "PENDING")
    assert last["reason"] == "taken for agent agent-1 by a call that got no answer; never run"
    assert redis_client.llen(keys.PENDING_QUEUE) == 2

    # and a second look finds nothing more to give back
    assert intake.reconcile(Counter({held.message: 1})) == 0
