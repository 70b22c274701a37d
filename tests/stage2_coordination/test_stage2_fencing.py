"""The fencing rules themselves, driven step by step against real Redis and ZooKeeper.

The process-level tests show the system surviving faults; these pin down *why*: which write is
refused, under which epoch or attempt, and what is counted.
"""

from __future__ import annotations

import json
import threading

import pytest
from kazoo.client import KazooClient, KazooState
from kazoo.retry import KazooRetry

from common import keys
from common.adapters.redis_dispatch import NotScheduled, RedisDispatcher, Scheduled
from common.adapters.redis_queue import Claim, RedisWorkQueue, Rejected
from common.adapters.redis_store import RedisTaskStore
from common.coordination.agent_info import AgentInfo
from common.coordination.election import LeaderElection, Term
from common.coordination.paths import agent_node
from common.coordination.registry import AgentRegistry
from common.coordination.zk import RetryingClient
from common.domain.transitions import TaskStatus
from common.testing.wait import eventually


@pytest.fixture
def store(redis_client) -> RedisTaskStore:
    return RedisTaskStore(redis_client)


@pytest.fixture
def dispatcher(redis_client, store) -> RedisDispatcher:
    return RedisDispatcher(redis_client, store)


def inbox_queue(redis_client, store, agent_id: str) -> RedisWorkQueue:
    return RedisWorkQueue(
        redis_client,
        store,
        source=keys.agent_tasks(agent_id),
        requeue_to=keys.PENDING_QUEUE,
    )


def place(dispatcher, redis_client, epoch: int, raw: str) -> Scheduled:
    redis_client.lpush(keys.PENDING_QUEUE, raw)
    taken = dispatcher.take(1)
    scheduled = dispatcher.schedule(taken, epoch, "scheduler:test")
    assert isinstance(scheduled, Scheduled), scheduled
    return scheduled


HAND_PUSHED = '{"taskType":"SHELL","payload":"echo hi"}'


# --8<-- [start:deposed-leader]
def test_a_deposed_leaders_dispatch_is_rejected_counted_and_recovered_by_the_new_leader(
    dispatcher, redis_client, store
):
    # Given a leader with epoch 10 that scheduled a hand-pushed task
    assert dispatcher.raise_fence(10) == (True, 10)
    scheduled = place(dispatcher, redis_client, 10, HAND_PUSHED)

    # When a new leader is elected with epoch 20 before the old one dispatches
    assert dispatcher.raise_fence(20) == (True, 20)
    result = dispatcher.dispatch(scheduled, "agent-1", 10, "scheduler:old")

    # Then the old leader's dispatch is rejected as stale and counted, and changes nothing
    assert (result.accepted, result.reason) == (False, "stale_epoch")
    assert store.stats()["rejected_stale_epoch"] == 1
    assert redis_client.llen(keys.agent_tasks("agent-1")) == 0
    assert store.get(scheduled.task.task_id).status == TaskStatus.SCHEDULED
    # and the new leader's sweep gives the task back as a new attempt, ready to place
    assert dispatcher.recover_scheduling(20, "scheduler:new") == (1, 0)
    task = store.get(scheduled.task.task_id)
    assert (task.status, task.attempt) == (TaskStatus.PENDING, 2)
    again = place(dispatcher, redis_client, 20, redis_client.lindex(keys.PENDING_QUEUE, 0))
    assert again.task.task_id == task.task_id
    assert dispatcher.dispatch(again, "agent-1", 20, "scheduler:new").accepted


# --8<-- [end:deposed-leader]


def test_the_fence_only_goes_up_and_a_stale_leader_cannot_schedule_or_sweep(
    dispatcher, redis_client, store
):
    # Given a fence raised to 20
    dispatcher.raise_fence(20)

    # When an older leader tries to raise it, schedule, or sweep
    raised = dispatcher.raise_fence(10)
    redis_client.lpush(keys.PENDING_QUEUE, HAND_PUSHED)
    taken = dispatcher.take(1)
    scheduled = dispatcher.schedule(taken, 10, "scheduler:old")
    swept = dispatcher.recover_scheduling(10, "scheduler:old")

    # Then nothing moves: the fence stays, no task is created, the message waits for the
    # current leader's sweep on queue:scheduling
    assert raised == (False, 20)
    assert isinstance(scheduled, NotScheduled) and scheduled.reason == "stale_epoch"
    assert swept == (-1, 0)
    assert redis_client.lrange(keys.SCHEDULING_QUEUE, 0, -1) == [HAND_PUSHED.encode()]
    assert store.list_tasks() == []
    assert store.stats()["rejected_stale_epoch"] == 2


# --8<-- [start:claim-attempt]
def test_an_agent_claims_only_the_current_attempt_dispatched_to_itself(
    dispatcher, redis_client, store
):
    # Given a task dispatched to agent-1 (attempt 1) whose node then vanished (failover)
    dispatcher.raise_fence(5)
    first = place(dispatcher, redis_client, 5, HAND_PUSHED)
    assert dispatcher.dispatch(first, "agent-1", 5, "scheduler:test").accepted
    stale_message = redis_client.lindex(keys.agent_tasks("agent-1"), 0).decode()
    assert json.loads(stale_message)["attempt"] == 1
    assert dispatcher.reap_agent("agent-1", "scheduler:test") == (1, 0)
    # and re-dispatched to agent-2 as attempt 2
    second = place(dispatcher, redis_client, 5, redis_client.lindex(keys.PENDING_QUEUE, 0))
    assert second.attempt == 2
    assert dispatcher.dispatch(second, "agent-2", 5, "scheduler:test").accepted
    current_message = redis_client.lindex(keys.agent_tasks("agent-2"), 0).decode()

    # When agent-1 (a zombie that had taken the message before it froze) claims it now, and
    # agent-1 claims agent-2's current message
    stale = inbox_queue(redis_client, store, "agent-1").claim("agent-1", stale_message)
    wrong = inbox_queue(redis_client, store, "agent-1").claim("agent-1", current_message)
    # Then both are refused and counted; only agent-2 may run attempt 2
    assert isinstance(stale, Rejected) and "stale_attempt" in stale.reason
    assert isinstance(wrong, Rejected) and "wrong_agent" in wrong.reason
    right = inbox_queue(redis_client, store, "agent-2").claim("agent-2", current_message)
    assert isinstance(right, Claim) and (right.attempt, right.epoch) == (2, 5)
    stats = store.stats()
    assert stats["rejected_stale_attempt"] >= 1 and stats["rejected_wrong_agent"] == 1
    assert store.get(second.task.task_id).status == TaskStatus.RUNNING


# --8<-- [end:claim-attempt]


def test_a_stage_1_message_is_still_claimed_straight_from_pending(redis_client, store):
    # Given the stage 1 queue and a hand-pushed message
    queue = RedisWorkQueue(redis_client, store)
    redis_client.lpush(keys.PENDING_QUEUE, HAND_PUSHED)
    raw = queue.take_reliably("agent-1", 1)

    # When a stage 1 agent claims it
    claim = queue.claim("agent-1", raw)

    # Then PENDING -> RUNNING, as before stage 2
    assert isinstance(claim, Claim) and claim.attempt == 1 and claim.epoch == 0
    states = [h["state"] for h in store.history(claim.task.task_id)]
    assert states == ["PENDING", "RUNNING"]


def retrying(hosts: str, chroot: str, timeout: float = 3.0) -> RetryingClient:
    bootstrap = KazooClient(hosts=hosts)
    bootstrap.start(timeout=10)
    bootstrap.ensure_path(chroot)
    bootstrap.stop()
    bootstrap.close()
    client = KazooClient(
        hosts=hosts + chroot,
        timeout=timeout,
        connection_retry=KazooRetry(max_tries=-1, delay=0.05, max_delay=0.5),
    )
    client.start(timeout=10)
    return RetryingClient(client, KazooRetry(max_tries=-1, delay=0.05, deadline=timeout))


def expire_session(zk: RetryingClient, hosts: str, chroot: str) -> None:
    """Expire `zk`'s session the way kazoo's own tests do: a second client joins the same
    session (same id and password) and closes it; the server then expires it for both."""
    session_id, password = zk.raw.client_id
    twin = KazooClient(hosts=hosts + chroot, client_id=(session_id, password))
    twin.start(timeout=10)
    twin.stop()
    twin.close()


def test_an_agent_whose_session_expires_pauses_then_re_registers_with_a_new_session(
    zk_hosts, zk_chroot
):
    # Given a registered agent
    zk = retrying(zk_hosts, zk_chroot)
    watcher = retrying(zk_hosts, zk_chroot)
    paused = threading.Event()
    registry = AgentRegistry(zk, AgentInfo("agent-1", capacity=2, task_types=["SHELL"]), paused)
    seen_paused = threading.Event()
    zk.add_listener(lambda state: state == KazooState.LOST and seen_paused.set())
    try:
        registry.start()
        first_owner = watcher.exists(agent_node("agent-1")).ephemeralOwner

        # When its session is expired by the server
        expire_session(zk, zk_hosts, zk_chroot)

        # Then it paused (no new work while the session was in doubt), registered again with a
        # new session, and took work again
        assert seen_paused.wait(10)
        eventually(
            lambda: (
                (stat := watcher.exists(agent_node("agent-1")))
                and stat.ephemeralOwner != first_owner
            ),
            10,
            message="re-registered",
        )
        eventually(lambda: not paused.is_set(), 10, message="unpaused")
        assert registry.registrations == 2
        # and load it reports after that lands on the new node
        registry.report_load(2)
        eventually(lambda: json.loads(watcher.get(agent_node("agent-1"))[0])["load"] == 2, 10)
    finally:
        registry.stop()
        zk.close()
        watcher.close()


def test_each_new_leader_gets_a_higher_epoch_than_the_last(zk_hosts, zk_chroot):
    # Given two contenders for /scheduler-leader
    clients = [retrying(zk_hosts, zk_chroot), retrying(zk_hosts, zk_chroot)]
    terms: list[tuple[str, int]] = []
    stop = {name: threading.Event() for name in ("a", "b")}
    elections = {
        name: LeaderElection(client, name) for name, client in zip("ab", clients, strict=True)
    }

    def lead(name: str):
        def run(term: Term) -> None:
            terms.append((name, term.epoch))
            stop[name].wait(30)

        return run

    threads = [
        threading.Thread(target=elections[n].run, args=(lead(n), stop[n]), daemon=True)
        for n in ("a", "b")
    ]
    try:
        threads[0].start()
        eventually(lambda: len(terms) == 1, 10, message="a elected")
        threads[1].start()
        eventually(lambda: len(elections["a"].contenders()) == 2, 10, message="b queued")

        # When the leader's session ends
        stop["a"].set()
        elections["a"].cancel()
        clients[0].close()

        # Then the other is elected, with a strictly higher epoch
        eventually(lambda: len(terms) == 2, 10, message="b elected")
        (first, e1), (second, e2) = terms
        assert (first, second) == ("a", "b")
        assert e2 > e1 > 0
    finally:
        for event in stop.values():
            event.set()
        for election in elections.values():
            election.cancel()
        for t in threads:
            t.join(5)
        clients[1].close()
