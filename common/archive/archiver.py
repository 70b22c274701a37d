"""The archiver: every attempt's final state, from the status events into PostgreSQL, once.

Pattern: exactly-once rows from at-least-once delivery, an Idempotent Consumer whose offset
follows its write (introduced in stage 5, on the stage 3 bus; docs/patterns/archive.md). Kafka
delivers at least once; the archive must hold exactly one row per (task, attempt). Two rules
give that:

1. The write is idempotent: `INSERT ... ON CONFLICT (task_id, attempt) DO NOTHING`. A
   redelivered event inserts nothing.
2. Offsets are committed only after the database transaction committed. A crash between the
   two (kill -9 of the archiver) redelivers the batch; rule 1 absorbs it. A crash before the
   database commit loses nothing: the offsets were not committed either.

At-least-once delivery plus an idempotent write = exactly-once rows, without Kafka
transactions (which could not span PostgreSQL anyway).

It reads task-status-update-topic in its own consumer group (`tasklab-archiver`), so it sees
every event the manager sees, at its own pace, and neither can hold the other back. One poll
reads up to `archive_batch_max` events; their rows go in one transaction, then their offsets
are committed (synchronously) in one request.

What a row holds, and why from where: the outcome of the attempt (status, result, error, exit
code, agent, epoch, when) comes from the event itself, which is the agent's own report and is
identical every time it is redelivered, so the row does not depend on when it is written. The
event lacks what describes the task (type, name, parent, creation time, payload), which never
changes after submit: that is read from the task's Redis hash, one pipelined read per batch,
and the whole hash is kept as the row's `task` document. When Redis no longer has the task
(retention deleted it while the archiver was down for days), the row is archived with what
the event carries and those columns NULL: the outcome matters more than its description, and
waiting for a task that is gone would stall the partition for ever.

Only agents' reports travel on the bus. A final state no agent reports (a task cancelled before
it ran, failed by the failover after its run was lost too often, a composite's parent and its
skipped or cancelled children) reaches the archive through the outbox stream instead, read by
outbox.py in the same process with the same two rules (see docs/patterns/archive.md).

Failures, none of them fatal to the process:
- PostgreSQL (or Redis) down: the batch is not committed anywhere; the consumer seeks back to
  the batch's first offsets, waits (exponential backoff up to `archive_retry_max`) and reads
  it again. Nothing is committed meanwhile, so nothing is skipped.
- a message that does not parse, or a row PostgreSQL refuses (not an outage): dead-lettered
  with the reason (the manager's dead-letter topic and headers), and its offset moves on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from redis import Redis
from redis.exceptions import RedisError

from common import keys
from common.archive.store import ArchiveRow, PostgresArchive
from common.domain.backoff import ExponentialBackoff
from common.messaging.clients import Bus, consumer_config
from common.messaging.dead_letter import DeadLetters, DeadLetterUnavailable
from common.messaging.schemas import MalformedMessage, StatusEvent, decode
from common.messaging.topics import STATUS
from common.observability import get_logger, metrics

log = get_logger("tasklab.archiver")

ARCHIVER_GROUP = "tasklab-archiver"

# What a row came from: a Kafka message, an outbox entry id.
T = TypeVar("T")

# Reads the Redis hashes of these task ids: {taskId: hash} (absent = Redis has no such task).
TaskReader = Callable[[Sequence[str]], dict[str, dict[str, str]]]


def redis_tasks(client: Redis) -> TaskReader:
    def read(task_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        pipe = client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hgetall(keys.task(task_id))
        found = {}
        for task_id, raw in zip(task_ids, pipe.execute(), strict=True):
            if raw:
                found[task_id] = {_str(k): _str(v) for k, v in raw.items()}
        return found

    return read


def _str(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def row_of(event: StatusEvent, task: dict[str, str] | None) -> ArchiveRow:
    """The row for one final event: the outcome from the event, the description from Redis."""
    task = task or {}
    return ArchiveRow(
        task_id=event.task_id,
        attempt=event.attempt,
        status=event.status,
        agent_id=event.agent_id,
        epoch=event.epoch,
        finished_at=event.at,
        result=event.result,
        error=event.error,
        exit_code=event.exit_code,
        timed_out=event.timed_out,
        duration=event.duration,
        task_type=task.get("taskType"),
        task_name=task.get("taskName"),
        parent_id=task.get("parentId") or None,
        created_at=_float(task.get("createdAt")),
        task=task,
    )


def write_rows(
    archive: PostgresArchive,
    rows: Sequence[tuple[T, ArchiveRow]],
    refused: Callable[[T, str], None],
) -> set[tuple[str, int]]:
    """Insert `rows` (each with what it came from) in one transaction; the keys inserted now.

    PostgreSQL not answering raises RetryLater("database"): nothing was written. A batch
    refused for another reason (not an outage: some row breaks a constraint) is written again
    row by row; each refused row is handed to `refused` with PostgreSQL's reason, to be
    dead-lettered, and the others are archived. Shared by the bus and the outbox paths.
    """
    try:
        return archive.write([row for _, row in rows])
    except psycopg.OperationalError as exc:
        raise RetryLater("database", str(exc).strip().splitlines()[0]) from exc
    except psycopg.Error as exc:
        log.warning("archive: batch refused (%s); writing its rows one by one", exc)
    inserted: set[tuple[str, int]] = set()
    for origin, row in rows:
        try:
            inserted |= archive.write([row])
        except psycopg.OperationalError as exc:
            raise RetryLater("database", str(exc).strip().splitlines()[0]) from exc
        except psycopg.Error as exc:
            refused(origin, f"archive refused the row: {exc}")
    return inserted


def record_written(
    rows: Sequence[tuple[object, ArchiveRow]], inserted: set, source: str
) -> tuple[int, int]:
    """What one batch wrote, counted in the metrics of its `source` ("event" or "outbox"):
    (rows inserted, rows that were already there)."""
    now = time.time()
    for _, row in rows:
        if row.key in inserted:
            metrics.ARCHIVE_ROWS.labels(row.status, source).inc()
            metrics.ARCHIVE_DELAY.observe(max(0.0, now - row.finished_at))
    duplicates = len({row.key for _, row in rows}) - len(inserted)
    if duplicates:
        metrics.ARCHIVE_DUPLICATES.labels(source).inc(duplicates)
    return len(inserted), duplicates


class RetryLater(Exception):
    """The batch cannot be written now (a dependency is down): read it again later."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class BatchOutcome:
    inserted: int = 0
    duplicates: int = 0
    skipped: int = 0  # RUNNING events: not a final state
    dead_lettered: int = 0
    committed: dict[tuple[str, int], int] = field(default_factory=dict)


class Archiver:
    def __init__(
        self,
        bus: Bus,
        client_id: str,
        archive: PostgresArchive,
        tasks: TaskReader,
        dead_letters: DeadLetters,
        batch_max: int = 500,
        backoff: ExponentialBackoff | None = None,
        **config: object,
    ) -> None:
        self.bus = bus
        self.topic = bus.topic(STATUS)
        self.group = bus.group(ARCHIVER_GROUP)
        self.consumer = Consumer(
            consumer_config(
                bus,
                ARCHIVER_GROUP,
                client_id,
                # Committed by hand, once the rows are in PostgreSQL, never by a timer.
                **{"enable.auto.commit": False, **config},
            )
        )
        self.archive = archive
        self.tasks = tasks
        self.dead_letters = dead_letters
        self.batch_max = batch_max
        self.backoff = backoff or ExponentialBackoff(0.2, 30.0)
        self.failures = 0  # consecutive batches that could not be written
        self.archived = 0
        self.duplicates = 0
        self.last_ok = 0.0  # monotonic time of the last batch written (readiness)

    # --8<-- [start:run]
    def run(self, stopping: threading.Event) -> None:
        self.consumer.subscribe([self.topic])
        try:
            while not stopping.is_set():
                batch = self.consumer.consume(self.batch_max, timeout=0.5)
                if not batch:
                    continue
                try:
                    self.handle(batch)
                    self.failures = 0
                except RetryLater as exc:
                    # Nothing of this batch is committed: go back to its start, wait, read
                    # it again. Not a crash, not a skip.
                    self.failures += 1
                    metrics.ARCHIVE_ERRORS.labels(exc.reason).inc()
                    delay = self.backoff.delay(self.failures)
                    log.warning("archive: %s; reading the batch again in %.1fs", exc, delay)
                    self._rewind(batch)
                    stopping.wait(delay)
        finally:
            self.consumer.close()

    # --8<-- [end:run]
    # --8<-- [start:handle]
    def handle(self, batch: Sequence[Message]) -> BatchOutcome:
        """Archive one poll's messages, then commit their offsets; raise RetryLater if the
        batch could not be written (nothing is committed then)."""
        outcome = BatchOutcome()
        finals: list[tuple[Message, StatusEvent]] = []
        # Dead-lettered only once the rows are written: a batch read again after an outage
        # would otherwise send its bad messages to the dead letters once per retry.
        bad: list[tuple[Message, str, str]] = []
        for msg in batch:
            if msg.error() is not None:
                self._on_error(msg.error())
                continue
            try:
                event = decode(StatusEvent, msg.value())
            except MalformedMessage as exc:
                bad.append((msg, str(exc), "malformed"))
                continue
            if event.is_final:
                finals.append((msg, event))
            else:
                outcome.skipped += 1
        if finals:
            try:
                found = self.tasks([event.task_id for _, event in finals])
            except RedisError as exc:
                raise RetryLater("redis", str(exc)) from exc
            rows = [(msg, row_of(event, found.get(event.task_id))) for msg, event in finals]
            inserted = self._write(rows, bad)
            outcome.inserted, outcome.duplicates = record_written(rows, inserted, "event")
            self.archived += outcome.inserted
            self.duplicates += outcome.duplicates
        for msg, error, reason in bad:
            self._dead_letter(msg, error, reason)
        outcome.dead_lettered = len(bad)
        # Only now, with the rows committed in PostgreSQL (and the bad messages safely in the
        # dead-letter topic): the next offset of each partition.
        outcome.committed = self._commit(batch)
        self.last_ok = time.monotonic()
        return outcome

    # --8<-- [end:handle]
    def _write(
        self, rows: list[tuple[Message, ArchiveRow]], bad: list[tuple[Message, str, str]]
    ) -> set:
        def refused(msg: Message, error: str) -> None:
            bad.append((msg, error, "refused"))

        return write_rows(self.archive, rows, refused)

    def _dead_letter(self, msg: Message, error: str, reason: str) -> None:
        try:
            self.dead_letters.send(msg, error)
        except DeadLetterUnavailable as exc:
            raise RetryLater("bus", str(exc)) from exc
        metrics.ARCHIVE_ERRORS.labels(reason).inc()

    def _commit(self, batch: Sequence[Message]) -> dict[tuple[str, int], int]:
        offsets: dict[tuple[str, int], int] = {}
        for msg in batch:
            if msg.error() is None:
                key = (msg.topic(), msg.partition())
                offsets[key] = max(offsets.get(key, -1), msg.offset() + 1)
        if not offsets:
            return offsets
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            # A partition revoked meanwhile (or the broker away): its next reader reads the
            # batch again from the last commit, and the idempotent write absorbs it.
            log.info("archive: offsets not committed (%s); they will be read again", exc)
        return offsets

    def _rewind(self, batch: Sequence[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for msg in batch:
            if msg.error() is None:
                key = (msg.topic(), msg.partition())
                first[key] = min(first.get(key, msg.offset()), msg.offset())
        for (topic, partition), offset in first.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                # Revoked meanwhile: its next owner starts from the last commit, before this.
                log.info("archive: cannot rewind %s[%d]: %s", topic, partition, exc)

    def _on_error(self, err: KafkaError) -> None:
        # Broker away, leader moving: librdkafka reconnects by itself; nothing to commit.
        log.warning("archive consumer: %s", err)
