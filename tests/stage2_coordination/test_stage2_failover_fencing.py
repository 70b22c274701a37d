"""Failover is fenced: a deposed or late leader, a reaper or a manager that no longer has the
right to give an agent's work back changes nothing. Driven step by step against real Redis and
ZooKeeper; the pause between the leader's ZooKeeper check and its reap is injected exactly
there (see `PausingZk`), the way test_stage2_fencing.py simulates a deposed leader.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import pytest
from kazoo.client import KazooClient
from kazoo.retry import KazooRetry

from common import keys
from common.adapters.redis_dispatch import RedisDispatcher, Scheduled
from common.adapters.redis_queue import Claim, RedisWorkQueue
from common.adapters.redis_store import RedisTaskStore
from common.coordination.election import LeaderElection, Term
from common.coordination.live_agents import LiveAgentsView
from common.coordination.paths import agent_node
from common.coordination.zk import RetryingClient
from common.domain.task import TaskSpec
from common.scheduling.scheduler import Deposed, Scheduler
from common.scheduling.strategies import make_strategy

HAND_PUSHED = '{"taskType":"SHELL","payload":"echo hi"}'


def spec(payload: str) -> TaskSpec:
    return TaskSpec.model_validate({"taskType": "SHELL", "payload": payload})


@pytest.fixture
def store(redis_client) -> RedisTaskStore:
    return RedisTaskStore(redis_client)


@pytest.fixture
def dispatcher(redis_client, store) -> RedisDispatcher:
    return RedisDispatcher(redis_client, store)


@pytest.fixture
def zk_hosts(zookeeper_service) -> str:
    return zookeeper_service.env["TASKLAB_ZK_HOSTS"]


def inbox_queue(redis_client, store, agent_id: str) -> RedisWorkQueue:
    """The stage 2 agent's queue: its inbox in, queue:pending for what it gives back."""
    return RedisWorkQueue(
        redis_client, store, source=keys.agent_tasks(agent_id), requeue_to=keys.PENDING_QUEUE
    )


def place(dispatcher, redis_client, epoch: int, raw: str) -> Scheduled:
    redis_client.lpush(keys.PENDING_QUEUE, raw)
    scheduled = dispatcher.schedule(dispatcher.take(1), epoch, "scheduler:test")
    assert isinstance(scheduled, Scheduled), scheduled
    return scheduled


def run_on(dispatcher, redis_client, store, agent_id: str, epoch: int, raw: str) -> Claim:
    """Place `raw` on `agent_id` at `epoch`; the agent takes and claims it: RUNNING."""
    scheduled = place(dispatcher, redis_client, epoch, raw)
    assert dispatcher.dispatch(scheduled, agent_id, epoch, "scheduler:test").accepted
    queue = inbox_queue(redis_client, store, agent_id)
    claim = queue.claim(agent_id, queue.take_reliably(agent_id, 1))
    assert isinstance(claim, Claim), claim
    return claim


class AgentSession:
    """An agent's ZooKeeper session: its ephemeral /live-agents node lives as long as it."""

    def __init__(self, hosts: str, chroot: str, agent_id: str) -> None:
        self.client = KazooClient(hosts=hosts + chroot)
        self.client.start(timeout=10)
        self.client.create(agent_node(agent_id), b'{"capacity": 1}', ephemeral=True)

    def die(self) -> None:
        # Closing the session deletes the node at once: the agent is gone for ZooKeeper.
        self.client.stop()
        self.client.close()


class PausingZk:
    """The leader's real ZooKeeper client, plus a pause right after `exists` answers.

    `meanwhile` runs once, after ZooKeeper said whatever it said and before the leader acts
    on it: the world moves on while the leader is paused (GC, a stopped VM) at the worst spot.
    """

    def __init__(self, real: RetryingClient, meanwhile: Callable[[], None]) -> None:
        self.real = real
        self.meanwhile = meanwhile
        self.paused = 0

    def exists(self, path: str):
        stat = self.real.exists(path)
        if self.paused == 0:
            self.paused += 1
            self.meanwhile()
        return stat


def leader(zk, dispatcher, meanwhile: Callable[[], None]) -> tuple[Scheduler, PausingZk]:
    real = RetryingClient(zk, KazooRetry(max_tries=3, delay=0.05))
    pausing = PausingZk(real, meanwhile)
    scheduler = Scheduler(
        "old",
        dispatcher,
        # The real client behind one injected pause, where the view asks ZooKeeper.
        LiveAgentsView(pausing),  # type: ignore[arg-type]
        LeaderElection(real, "old"),
        make_strategy("least-load"),
    )
    return scheduler, pausing


def task_state(store, task_id: str) -> tuple[str, int, str | None]:
    task = store.get(task_id)
    return task.status.value, task.attempt, task.agent_id


def lost_by(store, task_id: str, actor: str) -> list[dict]:
    return [
        h
        for h in store.history(task_id)
        if h["state"] == "PENDING" and h["actor"] == actor and "lost" in h.get("reason", "")
    ]


# --8<-- [start:deposed-reap]
def test_a_deposed_leaders_reap_changes_nothing(dispatcher, redis_client, store):
    # Given agent-1 running a task dispatched at epoch 10, with another one in its inbox
    dispatcher.raise_fence(10)
    running = run_on(dispatcher, redis_client, store, "agent-1", 10, HAND_PUSHED)
    waiting = place(dispatcher, redis_client, 10, HAND_PUSHED)
    assert dispatcher.dispatch(waiting, "agent-1", 10, "scheduler:test").accepted
    lists_before = {
        k: redis_client.lrange(k, 0, -1)
        for k in (keys.processing("agent-1"), keys.agent_tasks("agent-1"), keys.PENDING_QUEUE)
    }

    # When a newer leader raised the fence, and the old one (epoch 10) reaps agent-1 anyway
    dispatcher.raise_fence(20)
    result = dispatcher.reap_agent("agent-1", "scheduler:old", epoch=10, incarnation=0)

    # Then it is told it is deposed, and no task, no list and no history moved
    assert result == (-1, 0)
    assert task_state(store, running.task.task_id) == ("RUNNING", 1, "agent-1")
    assert task_state(store, waiting.task.task_id) == ("DISPATCHED", 1, "agent-1")
    assert {k: redis_client.lrange(k, 0, -1) for k in lists_before} == lists_before
    assert store.stats()["rejected_stale_epoch"] == 1


# --8<-- [end:deposed-reap]


def test_a_deposed_leader_releases_no_retry_from_its_backoff(dispatcher, redis_client):
    # Given a retry whose backoff is over, waiting in queue:delayed, and a fence at 20
    redis_client.zadd(keys.DELAYED_QUEUE, {HAND_PUSHED: 1.0})
    dispatcher.raise_fence(20)

    # When the leader of epoch 10 runs its sweep's promotion
    moved = dispatcher.promote_due(10)

    # Then nothing moved; the current leader's promotion does move it
    assert moved == -1
    assert redis_client.zcard(keys.DELAYED_QUEUE) == 1
    assert dispatcher.promote_due(20) == 1
    assert redis_client.lrange(keys.PENDING_QUEUE, 0, -1) == [HAND_PUSHED.encode()]


# --8<-- [start:pause-between-check-and-reap]
def test_a_leader_deposed_between_its_zookeeper_check_and_its_reap_leaves_the_restarted_agents_task_running(  # noqa: E501
    dispatcher, redis_client, store, zk, zk_hosts, zk_chroot
):
    # Given agent-1 running attempt 1 of a task placed by the leader of epoch 10
    dispatcher.raise_fence(10)
    session = AgentSession(zk_hosts, zk_chroot, "agent-1")
    first = run_on(dispatcher, redis_client, store, "agent-1", 10, HAND_PUSHED)
    task_id = first.task.task_id
    # and agent-1 dies
    session.die()

    restarted: list[AgentSession] = []

    def while_the_old_leader_is_paused() -> None:
        # A new leader is elected and raises the fence.
        dispatcher.raise_fence(20)
        # agent-1 restarts: it gives back what its previous run left (attempt 1 -> 2), then
        # registers again.
        assert inbox_queue(redis_client, store, "agent-1").reap("agent-1", "agent-1", True) == (
            1,
            0,
        )
        restarted.append(AgentSession(zk_hosts, zk_chroot, "agent-1"))
        # The new leader places attempt 2 on agent-1 again, which starts it.
        again = redis_client.lindex(keys.PENDING_QUEUE, 0).decode()
        redis_client.lpop(keys.PENDING_QUEUE)
        second = run_on(dispatcher, redis_client, store, "agent-1", 20, again)
        assert second.attempt == 2

    old, pausing = leader(zk, dispatcher, while_the_old_leader_is_paused)
    try:
        # When the old leader (epoch 10), which saw agent-1's node gone, wakes up and fails
        # agent-1 over
        with pytest.raises(Deposed):
            old._fail_over("agent-1", Term(epoch=10, node="old"))

        # Then it stepped down; the restarted agent's task is still RUNNING under attempt 2,
        # its entry still on agent-1's processing list, and the old leader wrote no history
        assert pausing.paused == 1
        assert task_state(store, task_id) == ("RUNNING", 2, "agent-1")
        processing = [json.loads(e) for e in redis_client.lrange(keys.processing("agent-1"), 0, -1)]
        assert [(e["taskId"], e["attempt"]) for e in processing] == [(task_id, 2)]
        assert lost_by(store, task_id, "scheduler:old") == []
        assert store.stats()["rejected_stale_epoch"] >= 1
    finally:
        for s in restarted:
            s.die()


# --8<-- [end:pause-between-check-and-reap]


def test_a_current_leader_paused_between_check_and_reap_leaves_an_agent_that_restarted_alone(
    dispatcher, redis_client, store, zk, zk_hosts, zk_chroot
):
    # Given agent-1 running attempt 1, and agent-1 dies
    dispatcher.raise_fence(10)
    session = AgentSession(zk_hosts, zk_chroot, "agent-1")
    task_id = run_on(dispatcher, redis_client, store, "agent-1", 10, HAND_PUSHED).task.task_id
    session.die()
    restarted: list[AgentSession] = []

    def while_the_leader_is_paused() -> None:
        # agent-1 restarts and registers, and gets attempt 2 back at the *same* epoch: the
        # fence alone cannot tell this work from the dead run's; the incarnation can.
        inbox_queue(redis_client, store, "agent-1").reap("agent-1", "agent-1", True)
        restarted.append(AgentSession(zk_hosts, zk_chroot, "agent-1"))
        again = redis_client.lindex(keys.PENDING_QUEUE, 0).decode()
        redis_client.lpop(keys.PENDING_QUEUE)
        run_on(dispatcher, redis_client, store, "agent-1", 10, again)

    old, _ = leader(zk, dispatcher, while_the_leader_is_paused)
    try:
        # When the leader wakes and fails agent-1 over with the incarnation it read before
        old._fail_over("agent-1", Term(epoch=10, node="old"))

        # Then the reap was refused as a newer incarnation's work: attempt 2 keeps running
        assert task_state(store, task_id) == ("RUNNING", 2, "agent-1")
        assert redis_client.llen(keys.processing("agent-1")) == 1
        assert store.stats()["rejected_reincarnated"] == 1
        assert old.stats.failed_over == 0
    finally:
        for s in restarted:
            s.die()


def test_without_a_leader_a_reap_moves_nothing_while_the_agents_heartbeat_key_lives(
    dispatcher, redis_client, store
):
    # Given agent-1 running a task, and its heartbeat key alive in Redis (stage 1: the agent
    # wrote it; stage 3: a manager that hears it on the bus did)
    dispatcher.raise_fence(10)
    task_id = run_on(dispatcher, redis_client, store, "agent-1", 10, HAND_PUSHED).task.task_id
    redis_client.set(keys.heartbeat("agent-1"), "1", px=60_000)

    # When the stage 3 manager (no epoch) and a stage 1 reaper try to give its work back
    by_manager = dispatcher.reap_agent("agent-1", "manager:m (missed heartbeats)")
    by_reaper = inbox_queue(redis_client, store, "agent-2").reap("agent-1", "reaper:agent-2")

    # Then nothing moves
    assert (by_manager, by_reaper) == ((0, 0), (0, 0))
    assert task_state(store, task_id) == ("RUNNING", 1, "agent-1")

    # and once the key is gone, the same call gives the task back
    redis_client.delete(keys.heartbeat("agent-1"))
    assert dispatcher.reap_agent("agent-1", "manager:m (missed heartbeats)") == (1, 0)
    assert task_state(store, task_id) == ("PENDING", 2, None)


def test_two_reapers_racing_on_one_list_give_every_entry_back_exactly_once(redis_client, store):
    # Given a dead stage 1 agent that held 60 running tasks
    queue = RedisWorkQueue(redis_client, store)
    ids = []
    for i in range(60):
        task, _ = store.submit(spec(f"echo {i}"))
        ids.append(task.task_id)
        claim = queue.claim("agent-1", queue.take_reliably("agent-1", 1))
        assert isinstance(claim, Claim)

    # When two reapers give its work back at the same time
    results: list[tuple[int, int]] = []
    start = threading.Barrier(2)

    def reap(name: str) -> None:
        reaper = RedisWorkQueue(redis_client, store)
        start.wait(5)
        results.append(reaper.reap("agent-1", f"reaper:{name}"))

    threads = [threading.Thread(target=reap, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    # Then every task went back once: one new attempt, one "lost" entry, one queue entry
    assert sum(r for r, _ in results) == 60 and sum(d for _, d in results) == 0
    assert redis_client.llen(keys.PENDING_QUEUE) == 60
    assert redis_client.llen(keys.processing("agent-1")) == 0
    for tid in ids:
        assert task_state(store, tid) == ("PENDING", 2, None)
        lost = [h for h in store.history(tid) if h.get("from") == "RUNNING"]
        assert len(lost) == 1, store.history(tid)


def test_a_reap_puts_raw_and_crafted_entries_back_byte_for_byte_and_touches_no_other_key(
    redis_client, store
):
    # Given a dead agent's processing list holding messages whose claim never ran: bytes that
    # are not UTF-8, a taskId that is not a string, and one crafted to name another task's
    # history list as its hash
    victim, _ = store.submit(spec("echo victim"))
    redis_client.delete(keys.PENDING_QUEUE)
    crafted = [
        b"\xff\xfe not json",
        b'{"taskId": 7, "taskType": "SHELL", "payload": "echo"}',
        json.dumps({"taskId": f"{victim.task_id}:history", "taskType": "SHELL"}).encode(),
    ]
    for entry in crafted:
        redis_client.lpush(keys.processing("agent-1"), entry)
    before = set(redis_client.keys("*"))

    # When a reaper gives them back
    requeued = RedisWorkQueue(redis_client, store).reap("agent-1", "reaper:test")

    # Then each is back on queue:pending unchanged, the oldest at the consuming end, no key but
    # the two lists was touched, and the victim's history is intact
    assert requeued == (3, 0)
    assert redis_client.lrange(keys.PENDING_QUEUE, 0, -1) == list(reversed(crafted))
    after = set(redis_client.keys("*"))
    assert after - before == {keys.PENDING_QUEUE.encode()}
    assert before - after == {keys.processing("agent-1").encode()}
    assert [h["state"] for h in store.history(victim.task_id)] == ["PENDING"]


def test_the_manager_leaves_a_restarted_agent_alone_before_it_hears_the_agents_first_beat(
    dispatcher, redis_client, store
):
    # Given agent-1 ran attempt 1, died (no heartbeat key), restarted, gave back its previous
    # run's work and now runs attempt 2; no manager has heard its new heartbeats yet
    dispatcher.raise_fence(10)
    task_id = run_on(dispatcher, redis_client, store, "agent-1", 10, HAND_PUSHED).task.task_id
    assert redis_client.exists(keys.heartbeat("agent-1")) == 0
    assert inbox_queue(redis_client, store, "agent-1").reap("agent-1", "agent-1", True) == (1, 0)
    again = redis_client.lpop(keys.PENDING_QUEUE).decode()
    run_on(dispatcher, redis_client, store, "agent-1", 10, again)

    # When a manager whose monitor still has agent-1 as silent fails it over
    result = dispatcher.reap_agent("agent-1", "manager:m (missed heartbeats)")

    # Then nothing moves: the restart marked the agent alive before it took any work
    assert result == (0, 0)
    assert task_state(store, task_id) == ("RUNNING", 2, "agent-1")
