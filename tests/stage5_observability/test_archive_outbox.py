"""The archive's outbox on real Redis and PostgreSQL: final states no agent reports (a cancel
before the run, a failover that gives up, a pinned task whose agent is gone, a composite's
skipped children and its parent) are archived exactly once, across a kill -9 of the archiver
and by two archivers at once (one of them killed); an entry that cannot be a row is
dead-lettered and the stream moves on; and a platform with no archiver keeps no outbox."""

from __future__ import annotations

import json
import os
import signal

import psycopg
import pytest
from confluent_kafka import Consumer
from observability_support import scrape, wait_ready
from redis import Redis

from common import keys
from common.adapters.redis_client import redis_client as make_redis_client
from common.adapters.redis_composite import RedisCompositeStore
from common.adapters.redis_dispatch import RedisDispatcher, Scheduled
from common.adapters.redis_queue import Claim, RedisWorkQueue
from common.adapters.redis_store import RedisTaskStore
from common.archive import migrate
from common.archive.archiver import ARCHIVER_GROUP, redis_tasks
from common.archive.outbox import OutboxArchiver, decode_entry, row_of_entry
from common.archive.store import PostgresArchive
from common.domain.composite import validate_composite
from common.domain.task import TaskSpec
from common.messaging.clients import Bus
from common.messaging.dead_letter import CONSUMER_GROUP, ERROR, ORIGINAL_OFFSET, ORIGINAL_TOPIC
from common.messaging.topics import DEAD_LETTER, ensure_topics
from common.testing import eventually

pytestmark = pytest.mark.integration

EPOCH = 5
ACTOR = "scheduler:test"


def shards(n: int) -> object:
    return validate_composite(
        {"kind": "SHARDS", "completions": n, "template": {"taskType": "SHELL", "payload": "true"}}
    )


def final_states_no_agent_reports(client: Redis, skipped: int = 3) -> dict[tuple[str, int], str]:
    """End tasks every way the platform does without an agent's report, through the real
    adapters; {(task, attempt): final status} of what each did."""
    store = RedisTaskStore(client)
    dispatcher = RedisDispatcher(client, store, max_lost_attempts=1)
    dispatcher.raise_fence(EPOCH)
    composites = RedisCompositeStore(client)
    ended: dict[tuple[str, int], str] = {}
    # An earlier round's cancelled task is still queued (its taker would drop it): not ours.
    client.delete(keys.PENDING_QUEUE)

    # A task whose run is lost with its agent, with no lost run left: FAILED by the failover
    client.lpush(keys.PENDING_QUEUE, '{"taskType":"SHELL","payload":"echo lost"}')
    lost = dispatcher.schedule(dispatcher.take(1), EPOCH, ACTOR)
    assert isinstance(lost, Scheduled)
    assert dispatcher.dispatch(lost, "agent-1", EPOCH, ACTOR).accepted
    queue = RedisWorkQueue(
        client, store, source=keys.agent_tasks("agent-1"), requeue_to=keys.PENDING_QUEUE
    )
    assert isinstance(queue.claim("agent-1", queue.take_reliably("agent-1", 1)), Claim)
    assert dispatcher.reap_agent("agent-1", ACTOR, epoch=EPOCH, incarnation=0) == (0, 1)
    ended[(lost.task.task_id, 1)] = "FAILED"

    # A pinned task whose one agent is gone (Dispatcher.fail)
    client.lpush(keys.PENDING_QUEUE, '{"taskType":"SHELL","payload":"echo pinned"}')
    pinned = dispatcher.schedule(dispatcher.take(1), EPOCH, ACTOR)
    assert isinstance(pinned, Scheduled)
    assert dispatcher.fail(pinned, EPOCH, ACTOR, "its agent agent-9 is gone").accepted
    ended[(pinned.task.task_id, 1)] = "FAILED"

    # A task cancelled before it ran (cancel.lua); its message stays queued,
    # and whoever takes it drops it
    task, _ = store.submit(TaskSpec(task_type="SHELL", payload="echo never"))
    assert store.cancel(task.task_id).accepted
    ended[(task.task_id, 1)] = "CANCELLED"

    # A composite whose children never run (SKIPPED) and whose parent then fails
    parent, _ = composites.submit_composite(shards(skipped))
    children = composites.children(parent.task_id)
    assert composites.start(parent.task_id, EPOCH, ACTOR).accepted
    assert composites.skip(parent.task_id, children, "no", EPOCH, ACTOR).count == skipped
    assert composites.finish(parent.task_id, "FAILED", EPOCH, ACTOR, error="all skipped").accepted
    ended |= {(child, 1): "SKIPPED" for child in children}
    ended[(parent.task_id, 1)] = "FAILED"

    # ...and a composite cancelled by a client, with its waiting children
    cancelled, _ = composites.submit_composite(shards(2))
    assert composites.cancel_composite(cancelled.task_id).accepted
    ended |= {(child, 1): "CANCELLED" for child in composites.children(cancelled.task_id)}
    ended[(cancelled.task_id, 1)] = "CANCELLED"
    return ended


def test_with_no_archiver_no_script_creates_the_outbox_or_writes_to_it(redis_client):
    # Given a platform that runs no archiver (stages 1 to 4, or stage 5 without one)
    # When tasks end every way that writes an outbox entry when there is an archiver
    ended = final_states_no_agent_reports(redis_client)

    # Then they ended, and Redis holds no outbox: nothing was written, nothing will grow
    store = RedisTaskStore(redis_client)
    for (task_id, _), status in ended.items():
        assert store.get(task_id).status.value == status, task_id
    assert not redis_client.exists(keys.ARCHIVE_OUTBOX)


@pytest.fixture
def archive(archive_dsn):
    archive = PostgresArchive(archive_dsn)
    yield archive
    archive.close()


def archiver_env(redis_url, kafka_service, kafka_namespace, archive_dsn) -> dict[str, str]:
    bus = Bus(kafka_service.env["TASKLAB_KAFKA_BOOTSTRAP"], kafka_namespace)
    ensure_topics(bus.bootstrap, bus.namespace)
    return {
        "TASKLAB_REDIS_URL": redis_url,
        "TASKLAB_KAFKA_BOOTSTRAP": bus.bootstrap,
        "TASKLAB_KAFKA_NAMESPACE": bus.namespace,
        "TASKLAB_ARCHIVE_DSN": archive_dsn,
        # The same consumer name after the restart: it reads its own pending entries first.
        "TASKLAB_ARCHIVE_ID": "outbox-1",
        # Small batches: the kill lands with entries delivered and not acknowledged.
        "TASKLAB_ARCHIVE_BATCH_MAX": "4",
    }


def start_archiver(observed_role, env, name):
    proc, address = observed_role("archiver", 5, env, name)
    checks = wait_ready(proc, address)["checks"]
    assert {"archiver", "outbox", "postgresql", "redis"} <= set(checks), checks
    return proc, address


def pending(client: Redis) -> int:
    return client.xpending(keys.ARCHIVE_OUTBOX, ARCHIVER_GROUP)["pending"]


def assert_archived_once(archive: PostgresArchive, ended: dict[tuple[str, int], str]) -> None:
    def complete():
        have = {(t, a): n for t, a, n in archive.keys()}
        missing = set(ended) - set(have)
        assert not missing, f"{len(missing)} of {len(ended)} not archived yet"
        return have

    have = eventually(complete, 30, 0.1, message="every final state archived")
    assert set(have) == set(ended), "rows for final states nobody made"
    assert all(n == 1 for n in have.values()), "a (task, attempt) archived twice"
    for (task_id, attempt), status in ended.items():
        archived = archive.get(task_id)
        assert archived.last.status == status and archived.last.attempt == attempt, task_id


def test_every_final_state_no_agent_reports_is_archived_once_across_a_kill_of_the_archiver(
    observed_role, redis_url, redis_client, kafka_service, kafka_namespace, archive_dsn, archive
):
    # Given an archiver, which creates the outbox with its group
    env = archiver_env(redis_url, kafka_service, kafka_namespace, archive_dsn)
    archiver, _ = start_archiver(observed_role, env, "archiver-1")
    assert redis_client.exists(keys.ARCHIVE_OUTBOX)

    # ...that has archived a first round of final states no agent reported
    first = final_states_no_agent_reports(redis_client)
    assert_archived_once(archive, first)
    eventually(lambda: redis_client.xlen(keys.ARCHIVE_OUTBOX) == 0, 10, message="drained")

    # When PostgreSQL stalls it mid-stream (the table locked: its insert waits), a second round
    # and an entry that cannot be a row arrive, and it is killed -9 holding entries it read
    lock = psycopg.connect(archive_dsn)
    lock.execute("LOCK TABLE task_attempts IN ACCESS EXCLUSIVE MODE")
    second = final_states_no_agent_reports(redis_client, skipped=12)
    bad_id = redis_client.xadd(keys.ARCHIVE_OUTBOX, {"taskId": "hand-made", "status": "RUNNING"})
    eventually(lambda: pending(redis_client) > 0, 10, message="entries delivered, not acked")
    os.kill(archiver.pid, signal.SIGKILL)
    archiver.proc.wait(10)
    lock.rollback()
    lock.close()
    left = redis_client.xlen(keys.ARCHIVE_OUTBOX)
    assert left > pending(redis_client) > 0, "the kill did not land mid-stream"

    # ...and one of the entries it held had been committed before it died (the crash fell
    # between PostgreSQL's commit and the XACK)
    held = redis_client.xpending_range(keys.ARCHIVE_OUTBOX, ARCHIVER_GROUP, "-", "+", 1)
    entry_id = held[0]["message_id"]
    (_, fields), *_ = redis_client.xrange(keys.ARCHIVE_OUTBOX, entry_id, entry_id)
    assert archive.write([row_of_entry(decode_entry(fields), None)])

    # Then the archiver started again under its name archives every final state exactly once
    archiver, address = start_archiver(observed_role, env, "archiver-2")
    assert_archived_once(archive, first | second)
    eventually(lambda: redis_client.xlen(keys.ARCHIVE_OUTBOX) == 0, 10, message="drained")
    assert pending(redis_client) == 0

    # ...counts the one committed before the kill as a duplicate, and the rest by source
    def counted():
        metrics = scrape(address)
        rows = metrics.value("tasklab_archive_rows_total", source="outbox")
        return rows == len(second) - 1 and metrics

    metrics = eventually(counted, 10, 0.2, message="outbox rows on /metrics")
    assert metrics.value("tasklab_archive_duplicates_total", source="outbox") == 1
    assert metrics.value("tasklab_archive_rows_total", source="outbox", status="SKIPPED") == 12
    assert metrics.value("tasklab_archive_errors_total", reason="malformed") == 1
    assert metrics.value("tasklab_queue_depth", queue="archive_outbox") == 0
    assert metrics.value("tasklab_archive_outbox_oldest_seconds") == 0

    # ...and the entry that could not be a row went to the dead letters with its reason
    bus = Bus(env["TASKLAB_KAFKA_BOOTSTRAP"], kafka_namespace)
    consumer = Consumer(
        {
            "bootstrap.servers": bus.bootstrap,
            "group.id": f"{kafka_namespace}-probe",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([bus.topic(DEAD_LETTER)])
    try:
        msg = eventually(
            lambda: (m := consumer.poll(0.5)) is not None and m.error() is None and m,
            20,
            0,
            message="the outbox's dead letter",
        )
    finally:
        consumer.close()
    headers = {k: v.decode() for k, v in msg.headers()}
    assert headers[ORIGINAL_TOPIC] == keys.ARCHIVE_OUTBOX
    assert headers[ORIGINAL_OFFSET] == bad_id.decode()
    assert headers[CONSUMER_GROUP] == bus.group(ARCHIVER_GROUP)
    assert headers[ERROR] == "malformed outbox entry: status 'RUNNING' is not a final state"
    assert json.loads(msg.value()) == {"taskId": "hand-made", "status": "RUNNING"}
    assert archiver.alive()


def test_entries_an_archiver_that_never_came_back_held_are_taken_over_by_another(
    redis_url, redis_client, archive_dsn, archive
):
    # Given an outbox whose entries one archiver read and never acknowledged (it is gone,
    # and its name with it: a new pod gets a new one)
    migrate.upgrade(archive_dsn)
    client = make_redis_client(redis_url)
    live = OutboxArchiver(
        client, "archiver-live", archive, redis_tasks(client), None, claim_idle=0.2, block=0.05
    )
    live.ensure_group()
    ended = final_states_no_agent_reports(redis_client)
    redis_client.xreadgroup(ARCHIVER_GROUP, "archiver-gone", {keys.ARCHIVE_OUTBOX: ">"})
    assert pending(redis_client) == len(ended)

    # When the live archiver polls, once they have been idle for its claim_idle
    def archived():
        entries = live.poll()
        if entries:
            live.handle(entries)
        return pending(redis_client) == 0

    eventually(archived, 10, 0.05, message="the gone archiver's entries taken over")

    # Then each of them is archived exactly once, and the outbox is empty
    assert_archived_once(archive, ended)
    assert redis_client.xlen(keys.ARCHIVE_OUTBOX) == 0


def cancel_burst(client: Redis, n: int) -> dict[tuple[str, int], str]:
    """`n` tasks submitted and cancelled before they ran: `n` outbox entries, quickly."""
    store = RedisTaskStore(client)
    ended = {}
    for i in range(n):
        task, _ = store.submit(TaskSpec(task_type="SHELL", payload=f"echo {i}"))
        assert store.cancel(task.task_id).accepted
        ended[(task.task_id, 1)] = "CANCELLED"
    client.delete(keys.PENDING_QUEUE)  # their messages: whoever took them would drop them
    return ended


def pending_by_consumer(client: Redis) -> dict[str, int]:
    infos = client.xinfo_consumers(keys.ARCHIVE_OUTBOX, ARCHIVER_GROUP)
    return {info["name"].decode(): info["pending"] for info in infos}


def test_two_archivers_on_one_outbox_archive_a_burst_once_and_a_kill_of_one_loses_nothing(
    observed_role, redis_url, redis_client, kafka_service, kafka_namespace, archive_dsn, archive
):
    # Given two archivers on the same outbox, each taking over what the other has held for
    # a second (a dead one's entries are not left for a minute)
    base = archiver_env(redis_url, kafka_service, kafka_namespace, archive_dsn)
    base["TASKLAB_ARCHIVE_CLAIM_IDLE"] = "1s"
    started = {}
    for name in ("a", "b"):
        env = {**base, "TASKLAB_ARCHIVE_ID": f"pair-{name}"}
        started[name] = start_archiver(observed_role, env, f"archiver-{name}")
    (one, one_address), (other, other_address) = started["a"], started["b"]

    # When a burst of final states reaches the outbox while both read it
    first = final_states_no_agent_reports(redis_client) | cancel_burst(redis_client, 150)

    # Then every one is archived exactly once, by the two of them together
    assert_archived_once(archive, first)
    eventually(lambda: redis_client.xlen(keys.ARCHIVE_OUTBOX) == 0, 10, message="drained")

    def rows(address: str) -> float:
        return scrape(address).value("tasklab_archive_rows_total", source="outbox") or 0

    eventually(
        lambda: rows(one_address) + rows(other_address) == len(first),
        10,
        0.2,
        message="the rows counted once between the two",
    )

    # When PostgreSQL stalls them (the table locked), a second burst arrives, both hold
    # entries they read and could not write, and one of them is killed -9
    lock = psycopg.connect(archive_dsn)
    lock.execute("LOCK TABLE task_attempts IN ACCESS EXCLUSIVE MODE")
    second = cancel_burst(redis_client, 60)
    eventually(
        lambda: all(pending_by_consumer(redis_client).get(f"archiver-pair-{n}") for n in "ab"),
        15,
        0.05,
        message="both archivers holding entries",
    )
    os.kill(one.pid, signal.SIGKILL)
    one.proc.wait(10)
    held = pending_by_consumer(redis_client)["archiver-pair-a"]
    assert held > 0

    # ...while the burst goes on, and PostgreSQL comes back
    second |= cancel_burst(redis_client, 60)
    lock.rollback()
    lock.close()

    # Then the one left archives all of it, the dead one's entries too, each exactly once,
    # and the outbox holds nothing, pending or not
    assert_archived_once(archive, first | second)
    eventually(lambda: redis_client.xlen(keys.ARCHIVE_OUTBOX) == 0, 10, message="drained")
    assert pending(redis_client) == 0
    assert other.alive()


def dead_letters_of(bootstrap: str, kafka_namespace: str, n: int) -> list:
    """The first `n` dead letters on the test's namespace, read from the start."""
    bus = Bus(bootstrap, kafka_namespace)
    consumer = Consumer(
        {
            "bootstrap.servers": bus.bootstrap,
            "group.id": f"{kafka_namespace}-probe",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([bus.topic(DEAD_LETTER)])
    seen = []
    try:

        def all_read():
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                seen.append(msg)
            return len(seen) >= n

        eventually(all_read, 20, 0, message=f"{n} dead letters")
    finally:
        consumer.close()
    return seen


def test_an_entry_whose_bytes_are_not_utf8_is_dead_lettered_and_those_after_it_archived(
    observed_role, redis_url, redis_client, kafka_service, kafka_namespace, archive_dsn, archive
):
    # Given a running archiver
    env = archiver_env(redis_url, kafka_service, kafka_namespace, archive_dsn)
    archiver, address = start_archiver(observed_role, env, "archiver-1")

    # When entries whose bytes are not UTF-8 (a task id, an error, a field's name) arrive
    # between final states, written by a raw client as no script would
    before = cancel_burst(redis_client, 10)
    raw = Redis.from_url(redis_url)  # bytes in, bytes out: nothing decoded on the way
    good = {"status": b"CANCELLED", "attempt": b"1", "finishedAt": b"1700000000.5"}
    bad = {
        raw.xadd(keys.ARCHIVE_OUTBOX, {**good, "taskId": b"t-\xff\xfe"}).decode(): (
            "malformed outbox entry: field taskId is not UTF-8 (byte 2: invalid start byte)",
            {"taskId": "t-\\xff\\xfe", "status": "CANCELLED"},
        ),
        raw.xadd(keys.ARCHIVE_OUTBOX, {**good, "taskId": b"t-2", "error": b"\xc3("}).decode(): (
            "malformed outbox entry: field error is not UTF-8 (byte 0: invalid continuation byte)",
            {"taskId": "t-2", "error": "\\xc3("},
        ),
        raw.xadd(keys.ARCHIVE_OUTBOX, {**good, "taskId": b"t-3", b"n\x80": b"x"}).decode(): (
            "malformed outbox entry: field name n\\x80 is not UTF-8 (byte 1: invalid start byte)",
            {"taskId": "t-3", "n\\x80": "x"},
        ),
    }
    raw.close()
    after = cancel_burst(redis_client, 10)

    # Then the final states before and after them are archived exactly once, none of the bad
    # ones is (no row for a task id made of replacement characters), and the stream drained
    assert_archived_once(archive, before | after)
    eventually(lambda: redis_client.xlen(keys.ARCHIVE_OUTBOX) == 0, 10, message="drained")
    assert pending(redis_client) == 0

    # ...each bad one is on the dead-letter topic with its reason and its bytes shown
    letters = dead_letters_of(env["TASKLAB_KAFKA_BOOTSTRAP"], kafka_namespace, len(bad))
    assert len(letters) == len(bad)
    for msg in letters:
        headers = {k: v.decode() for k, v in msg.headers()}
        assert headers[ORIGINAL_TOPIC] == keys.ARCHIVE_OUTBOX
        reason, shown = bad[headers[ORIGINAL_OFFSET]]
        assert headers[ERROR] == reason
        assert shown.items() <= json.loads(msg.value()).items()

    # ...counted, and the archiver is alive and ready
    metrics = scrape(address)
    assert metrics.value("tasklab_archive_errors_total", reason="malformed") == len(bad)
    assert archiver.alive()
    assert wait_ready(archiver, address)["checks"]["outbox"]
