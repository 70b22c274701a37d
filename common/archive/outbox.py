"""The archive's outbox: final states no agent reports, from a Redis stream into PostgreSQL, once.

Pattern: Transactional Outbox (introduced in stage 3 for the dispatch; here in stage 5 for the
archive; docs/patterns/archive.md). The status topic carries the agents' reports. A final state
the platform decides by itself has no report: a task cancelled before it ran (cancel.lua), a
task failed by the failover after its run was lost too often (reap.lua), a pinned task whose
one agent is gone (Dispatcher.fail, through transition.lua), a composite's parent ending
and its children skipped or cancelled (composite_*.lua). Each of those scripts appends an entry
to the stream `archive:outbox` in the same atomic step as the transition
(common/adapters/lua/archive_outbox.lua): the state and its entry exist together or not at all.
The scripts write only while the stream exists; the archiver creates it with its consumer
group when it starts, so a platform that runs no archiver writes and keeps nothing.

The relay is this consumer, in the archiver's process, in the consumer group `tasklab-archiver`
of the stream. The same two rules as the bus path (archiver.py) make the rows exactly-once:

1. the same idempotent insert, `ON CONFLICT (task_id, attempt) DO NOTHING`;
2. an entry is acknowledged (XACK, and deleted with XDEL in the same MULTI) only after the
   PostgreSQL transaction committed. A kill -9 in between leaves it pending in the group: the
   archiver that starts again reads its own pending entries first (XREADGROUP from id 0), and
   any archiver takes over the entries another has held idle for `archive_claim_idle`
   (XAUTOCLAIM; a minute by default), so one that never comes back (a new pod, a new name)
   strands nothing. Rule 1 absorbs what was written but not acknowledged.

Deleting each archived entry keeps the stream at exactly the backlog: its length is what is
not archived yet, and the first entry's id says how old the oldest one is (both are on every
role's /metrics, read from Redis: tasklab_queue_depth{queue="archive_outbox"} and
tasklab_archive_outbox_oldest_seconds).

Where the outbox and the bus meet: a running task that is cancelled ends CANCELLED by cancel.lua
(an entry), and its agent, which kills the run, reports CANCELLED for the same (task, attempt)
on the bus. Whichever path reaches PostgreSQL first writes the row; the other is counted as a
duplicate (tasklab_archive_duplicates_total{source}).

Failures, none of them fatal to the process: PostgreSQL or Redis down, or a dead letter not
acknowledged by Kafka, leaves the batch pending, waits (exponential backoff) and reads its own
pending entries again. An entry that cannot become a row (a field missing, not a number or not
UTF-8, a row PostgreSQL refuses) goes to the dead-letter topic with its reason
(x-original-topic names the stream, x-original-offset the entry id) and is acknowledged: the
stream moves on.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError, ResponseError

from common import keys
from common.archive.archiver import (
    ARCHIVER_GROUP,
    BatchOutcome,
    RetryLater,
    TaskReader,
    record_written,
    write_rows,
)
from common.archive.store import ArchiveRow, PostgresArchive
from common.config import Settings
from common.domain.backoff import ExponentialBackoff
from common.domain.transitions import TERMINAL_STATES
from common.messaging.clients import EventPublisher
from common.messaging.dead_letter import (
    ORIGINAL_OFFSET,
    ORIGINAL_TOPIC,
    DeadLetters,
    DeadLetterUnavailable,
)
from common.observability import get_logger, metrics

log = get_logger("tasklab.archiver")

FINAL_STATUSES = frozenset(status.value for status in TERMINAL_STATES)
# An archiver that was killed (or lost its pod, and with it its consumer name) leaves its
# entries pending under its name: after `archive_claim_idle` without an acknowledgement another
# takes them. A consumer of the group with nothing pending, silent for `archive_forget_after`,
# is a dead archiver's name: forgotten, so the group's consumer list does not grow with every
# restart. The role passes the settings; these defaults are the settings' own.
CLAIM_IDLE: float = Settings.model_fields["archive_claim_idle"].default
FORGET_AFTER: float = Settings.model_fields["archive_forget_after"].default


class MalformedEntry(ValueError):
    """An outbox entry that cannot become a row; the message is the reason."""


@dataclass(frozen=True)
class OutboxEntry:
    """One final state, as archive_outbox.lua appends it (field names are the task hash's)."""

    task_id: str
    attempt: int
    status: str
    at: float  # when the state was reached: the task's finishedAt (else its updatedAt)
    actor: str  # who ended it: a client, the leader, the coordinator
    source: str  # which path: cancel, failover, dispatch, composite
    epoch: int = 0
    agent_id: str = ""  # the agent that held the attempt, if one did
    error: str | None = None
    result: str | None = None
    task_type: str | None = None
    task_name: str | None = None
    parent_id: str | None = None
    created_at: float | None = None

    def to_fields(self) -> dict[str, str]:
        """The stream entry's fields, as the Lua side writes them (tests, hand-made entries)."""
        fields = {
            "taskId": self.task_id,
            "actor": self.actor,
            "source": self.source,
            "status": self.status,
            "attempt": str(self.attempt),
            "epoch": str(self.epoch),
            "finishedAt": repr(self.at),
        }
        optional = {
            "agentId": self.agent_id or None,
            "taskType": self.task_type,
            "taskName": self.task_name,
            "parentId": self.parent_id,
            "createdAt": None if self.created_at is None else repr(self.created_at),
            "error": self.error,
            "result": self.result,
        }
        return fields | {k: v for k, v in optional.items() if v not in (None, "")}


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _shown(value: bytes | str) -> str:
    """A field as a dead letter shows it: bytes that are not UTF-8 as \\xNN escapes, so that
    whoever reads it sees what was there (a replacement character would hide it)."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _utf8(value: bytes | str, what: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedEntry(f"{what} is not UTF-8 (byte {exc.start}: {exc.reason})") from None


def _utf8_fields(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """The entry's fields as text; MalformedEntry names the first that is not UTF-8.

    Strict, not decoded with replacement characters: a task id (or an error, a result) with
    U+FFFD in place of its bytes would be archived as a row of a task nobody made."""
    fields = {}
    for key, value in raw.items():
        name = _utf8(key, f"field name {_shown(key)[:40]}")
        fields[name] = _utf8(value, f"field {name[:40]}")
    return fields


def _number(fields: Mapping[str, str], name: str, kind: type, required: bool):
    raw = fields.get(name)
    if raw in (None, ""):
        if required:
            raise MalformedEntry(f"no {name}")
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise MalformedEntry(f"{name} {raw[:40]!r} is not a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise MalformedEntry(f"{name} {raw[:40]!r} is not a finite number")
    return value


def decode_entry(raw: Mapping[bytes | str, bytes | str]) -> OutboxEntry:
    """An outbox entry from the stream's fields; MalformedEntry says why one cannot be a row.

    Strict about the outcome (task, attempt, final status, when): that is the row. Lenient
    about the description (a createdAt that is not a number is left out, as for a task Redis
    no longer has): the outcome matters more.
    """
    fields = _utf8_fields(raw)
    task_id = fields.get("taskId", "")
    if not task_id:
        raise MalformedEntry("no taskId")
    status = fields.get("status", "")
    if status not in FINAL_STATUSES:
        raise MalformedEntry(f"status {status[:40]!r} is not a final state")
    attempt = _number(fields, "attempt", int, True)
    if attempt < 1:
        raise MalformedEntry(f"attempt {attempt} is not positive")
    at = _number(fields, "finishedAt", float, False)
    if at is None:
        at = _number(fields, "updatedAt", float, False)
    if at is None:
        raise MalformedEntry("no finishedAt nor updatedAt")
    epoch = _number(fields, "epoch", int, False) or 0
    try:
        created = _number(fields, "createdAt", float, False)
    except MalformedEntry:
        created = None
    return OutboxEntry(
        task_id=task_id,
        attempt=attempt,
        status=status,
        at=at,
        actor=fields.get("actor", ""),
        source=fields.get("source", ""),
        epoch=epoch,
        agent_id=fields.get("agentId", ""),
        error=fields.get("error") or None,
        result=fields.get("result") or None,
        task_type=fields.get("taskType") or None,
        task_name=fields.get("taskName") or None,
        parent_id=fields.get("parentId") or None,
        created_at=created,
    )


def row_of_entry(entry: OutboxEntry, task: dict[str, str] | None) -> ArchiveRow:
    """The row for one entry: everything from the entry (it carries the task's description
    too, so a task retention deleted meanwhile is still archived whole); the hash, when Redis
    still has it, as the row's `task` document."""
    return ArchiveRow(
        task_id=entry.task_id,
        attempt=entry.attempt,
        status=entry.status,
        agent_id=entry.agent_id,
        epoch=entry.epoch,
        finished_at=entry.at,
        result=entry.result,
        error=entry.error,
        task_type=entry.task_type,
        task_name=entry.task_name,
        parent_id=entry.parent_id,
        created_at=entry.created_at,
        task=task or {},
    )


class OutboxDeadLetters:
    """An entry that cannot be archived, to the dead-letter topic with its reason.

    The topic's headers, with the stream in x-original-topic and the entry id in
    x-original-offset (a stream has no partitions); the value is the entry's fields as JSON.
    """

    def __init__(self, publisher: EventPublisher, group: str, timeout: float = 10.0) -> None:
        self.dead_letters = DeadLetters(publisher, group, timeout)

    def send(self, entry_id: str, fields: Mapping[str, str], error: str) -> None:
        self.dead_letters.send_raw(
            fields.get("taskId") or entry_id,
            json.dumps(dict(fields)).encode(),
            [(ORIGINAL_TOPIC, keys.ARCHIVE_OUTBOX), (ORIGINAL_OFFSET, entry_id)],
            error,
            where=f"{keys.ARCHIVE_OUTBOX} entry {entry_id}",
        )


Entries = list[tuple[str, dict[str, str] | None]]


class OutboxArchiver:
    """The consumer of archive:outbox; one per archiver process, `consumer` its name."""

    def __init__(
        self,
        client: Redis,
        consumer: str,
        archive: PostgresArchive,
        tasks: TaskReader,
        dead_letters: OutboxDeadLetters,
        batch_max: int = 500,
        backoff: ExponentialBackoff | None = None,
        claim_idle: float = CLAIM_IDLE,
        forget_after: float = FORGET_AFTER,
        block: float = 0.5,
    ) -> None:
        self.client = client
        self.consumer = consumer
        self.archive = archive
        self.tasks = tasks
        self.dead_letters = dead_letters
        self.batch_max = batch_max
        self.backoff = backoff or ExponentialBackoff(0.2, 30.0)
        self.claim_idle = claim_idle
        self.forget_after = forget_after
        self.block = block
        self.key = keys.ARCHIVE_OUTBOX
        self.group = ARCHIVER_GROUP
        self.failures = 0
        self.archived = 0
        self.duplicates = 0
        self.ready = False  # the group exists: the scripts write entries
        # Our own pending entries are read first: those delivered to this name before a crash
        # (or a batch that could not be written) and not acknowledged.
        self._own_pending = True
        self._claim_cursor = "0-0"
        self._next_claim = 0.0

    # --8<-- [start:ensure_group]
    def ensure_group(self) -> None:
        """Create the stream with the archiver's group: from here on, the scripts write to it.

        From id 0: should the group be recreated under an existing stream (deleted by hand),
        every entry still in it is read. A group that exists already is left as it is.
        """
        try:
            self.client.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.ready = True

    # --8<-- [end:ensure_group]
    # --8<-- [start:run]
    def run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                if not self.ready:
                    self.ensure_group()
                entries = self.poll()
                if entries:
                    self.handle(entries)
                self.failures = 0
            except (RetryLater, RedisError) as exc:
                reason = exc.reason if isinstance(exc, RetryLater) else "redis"
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    # The stream or its group is gone (deleted by hand, a Redis restored
                    # without it): create it again before anything else.
                    self.ready = False
                # Nothing of this batch was acknowledged: it is read again from our own
                # pending entries, after a wait. Not a crash, not a skip.
                self._own_pending = True
                self.failures += 1
                metrics.ARCHIVE_ERRORS.labels(reason).inc()
                delay = self.backoff.delay(self.failures)
                log.warning("archive outbox: %s; reading it again in %.1fs", exc, delay)
                stopping.wait(delay)

    # --8<-- [end:run]
    def poll(self) -> Entries:
        """The next entries to archive: our own pending ones first, then (every so often)
        those another archiver left idle, then new ones (waiting up to `block`)."""
        if self._own_pending:
            entries = self._read("0", block=None)
            if entries:
                return entries
            self._own_pending = False
        if time.monotonic() >= self._next_claim:
            entries = self._claim()
            if entries:
                return entries
        return self._read(">", block=int(self.block * 1000))

    def _read(self, start: str, block: int | None) -> Entries:
        reply = self.client.xreadgroup(
            self.group, self.consumer, {self.key: start}, count=self.batch_max, block=block
        )
        if not reply:
            return []
        return [(_text(i), fields) for i, fields in reply[0][1]]

    def _claim(self) -> Entries:
        reply = self.client.xautoclaim(
            self.key,
            self.group,
            self.consumer,
            min_idle_time=int(self.claim_idle * 1000),
            start_id=self._claim_cursor,
            count=self.batch_max,
        )
        cursor, claimed = _text(reply[0]), reply[1]
        gone = [_text(i) for i in (reply[2] if len(reply) > 2 else [])]
        if gone:
            # Pending but deleted from the stream meanwhile: nothing left to archive.
            self._ack(gone)
        self._claim_cursor = cursor
        if cursor == "0-0":
            # A whole pass over the group's pending entries: wait before the next one.
            self._next_claim = time.monotonic() + self.claim_idle / 2
            self._forget_dead_consumers()
        entries = [(_text(i), fields) for i, fields in claimed]
        if entries:
            log.info("archive outbox: took over %d idle entries of another archiver", len(entries))
        return entries

    def _forget_dead_consumers(self) -> None:
        for info in self.client.xinfo_consumers(self.key, self.group):
            name = _text(info["name"])
            silent = info["idle"] > self.forget_after * 1000
            if name != self.consumer and not info["pending"] and silent:
                self.client.xgroup_delconsumer(self.key, self.group, name)

    # --8<-- [start:handle]
    def handle(self, entries: Entries) -> BatchOutcome:
        """Archive one batch of entries, then acknowledge and delete them; raise RetryLater
        (or a RedisError) when the batch could not be written: nothing is acknowledged then."""
        outcome = BatchOutcome()
        good: list[tuple[str, OutboxEntry]] = []
        bad: list[tuple[str, dict[str, str], str, str]] = []
        for entry_id, raw in entries:
            if not raw:
                continue  # pending, but deleted from the stream: nothing to archive
            try:
                good.append((entry_id, decode_entry(raw)))
            except MalformedEntry as exc:
                fields = {_shown(k): _shown(v) for k, v in raw.items()}
                bad.append((entry_id, fields, f"malformed outbox entry: {exc}", "malformed"))
        if good:
            try:
                found = self.tasks([entry.task_id for _, entry in good])
            except RedisError as exc:
                raise RetryLater("redis", str(exc)) from exc
            rows = [(i, row_of_entry(entry, found.get(entry.task_id))) for i, entry in good]
            raws = dict(entries)

            def refused(entry_id: str, error: str) -> None:
                fields = {_shown(k): _shown(v) for k, v in (raws[entry_id] or {}).items()}
                bad.append((entry_id, fields, error, "refused"))

            inserted = write_rows(self.archive, rows, refused)
            outcome.inserted, outcome.duplicates = record_written(rows, inserted, "outbox")
            self.archived += outcome.inserted
            self.duplicates += outcome.duplicates
        for entry_id, fields, error, reason in bad:
            try:
                self.dead_letters.send(entry_id, fields, error)
            except DeadLetterUnavailable as exc:
                raise RetryLater("bus", str(exc)) from exc
            metrics.ARCHIVE_ERRORS.labels(reason).inc()
        outcome.dead_lettered = len(bad)
        # Only now, with the rows committed in PostgreSQL and the bad entries in the dead
        # letters: acknowledged and deleted, so the stream holds exactly the backlog.
        self._ack([entry_id for entry_id, _ in entries])
        return outcome

    # --8<-- [end:handle]
    def _ack(self, ids: Sequence[str]) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.key, self.group, *ids)
        pipe.xdel(self.key, *ids)
        pipe.execute()
