"""PostgresArchive: the archive's one SQL speaker, on psycopg 3.

Writes are a batch per poll in one transaction: `INSERT ... ON CONFLICT (task_id, attempt) DO
NOTHING RETURNING`, so a redelivered event (the archiver is at-least-once) inserts nothing and
is counted as a duplicate, and the rows of a batch are committed together or not at all.
Reads serve the `TaskArchive` port (common/ports/archive.py) for the API and the CLI.

PostgreSQL's text and jsonb cannot hold a NUL character, which a task's output may contain
(Redis keeps it): the archive stores U+FFFD in its place.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from common.ports.archive import ArchivedAttempt, ArchivedTask, ArchiveUnavailable

COLUMNS = (
    "task_id",
    "attempt",
    "status",
    "agent_id",
    "epoch",
    "result",
    "error",
    "exit_code",
    "timed_out",
    "duration_seconds",
    "task_type",
    "task_name",
    "parent_id",
    "created_at",
    "finished_at",
    "task",
)


@dataclass(frozen=True)
class ArchiveRow:
    task_id: str
    attempt: int
    status: str
    agent_id: str
    epoch: int
    finished_at: float
    result: str | None = None
    error: str | None = None
    exit_code: int | None = None
    timed_out: bool = False
    duration: float | None = None
    task_type: str | None = None
    task_name: str | None = None
    parent_id: str | None = None
    created_at: float | None = None
    task: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.task_id, self.attempt)

    def values(self) -> tuple:
        return (
            _text(self.task_id),
            self.attempt,
            self.status,
            _text(self.agent_id),
            self.epoch,
            _text(self.result),
            _text(self.error),
            self.exit_code,
            self.timed_out,
            self.duration,
            _text(self.task_type),
            _text(self.task_name),
            _text(self.parent_id),
            _when(self.created_at),
            _when(self.finished_at),
            Jsonb({_text(k): _text(v) for k, v in (self.task or {}).items()}),
        )


def _text(value: Any) -> Any:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _seconds(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


class PostgresArchive:
    """One connection, reopened after it broke; not shared between threads."""

    def __init__(self, dsn: str, connect_timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self._conn: psycopg.Connection | None = None
        # One connection: the API reads from its thread pool, one statement at a time.
        self._lock = threading.RLock()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            self._conn = psycopg.connect(
                self.dsn, connect_timeout=max(1, int(self.connect_timeout))
            )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def ping(self) -> bool:
        self._connection().execute("SELECT 1").fetchone()
        # Not in a transaction for longer than the ping.
        self._connection().rollback()
        return True

    # --8<-- [start:write]
    def write(self, rows: Sequence[ArchiveRow]) -> set[tuple[str, int]]:
        """Insert `rows` in one transaction; return the keys inserted now (not already there).

        Raises psycopg.OperationalError when PostgreSQL cannot be reached (nothing was
        written; try again later), another psycopg.Error when a row itself is refused.
        """
        if not rows:
            return set()
        # One row per key within the statement: ON CONFLICT cannot see a row of the same
        # statement, and a batch may carry a redelivered event twice.
        unique = list({row.key: row for row in reversed(rows)}.values())
        statement = sql.SQL(
            "INSERT INTO task_attempts ({columns}) VALUES {values} "
            "ON CONFLICT (task_id, attempt) DO NOTHING RETURNING task_id, attempt"
        ).format(
            columns=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
            values=sql.SQL(", ").join(
                sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)))
                for _ in unique
            ),
        )
        params = [value for row in unique for value in row.values()]
        conn = self._connection()
        try:
            with conn.transaction():
                inserted = conn.execute(statement, params).fetchall()
        except psycopg.OperationalError:
            self.close()
            raise
        return {(task_id, attempt) for task_id, attempt in inserted}

    # --8<-- [end:write]
    def get(self, task_id: str) -> ArchivedTask | None:
        with self._lock:
            return self._get(task_id)

    def _get(self, task_id: str) -> ArchivedTask | None:
        try:
            conn = self._connection()
            with conn.transaction():
                cursor = conn.execute(
                    "SELECT task_id, attempt, status, agent_id, epoch, result, error, exit_code, "
                    "timed_out, duration_seconds, task_type, task_name, parent_id, created_at, "
                    "finished_at, archived_at, task "
                    "FROM task_attempts WHERE task_id = %s ORDER BY attempt",
                    (task_id,),
                )
                found = cursor.fetchall()
        except psycopg.OperationalError as exc:
            self.close()
            raise ArchiveUnavailable(f"the archive does not answer: {exc}") from exc
        except psycopg.Error as exc:
            raise ArchiveUnavailable(f"the archive cannot be read: {exc}") from exc
        if not found:
            return None
        return ArchivedTask(task_id, tuple(_attempt(row) for row in found))

    def count(self) -> int:
        conn = self._connection()
        with conn.transaction():
            return conn.execute("SELECT count(*) FROM task_attempts").fetchone()[0]

    def keys(self) -> list[tuple[str, int, int]]:
        """(task_id, attempt, rows) for every archived key: what the tests count."""
        conn = self._connection()
        with conn.transaction():
            return [
                (task_id, attempt, n)
                for task_id, attempt, n in conn.execute(
                    "SELECT task_id, attempt, count(*) FROM task_attempts "
                    "GROUP BY task_id, attempt ORDER BY task_id, attempt"
                )
            ]


def _attempt(row: Iterable[Any]) -> ArchivedAttempt:
    (
        task_id,
        attempt,
        status,
        agent_id,
        epoch,
        result,
        error,
        exit_code,
        timed_out,
        duration,
        task_type,
        task_name,
        parent_id,
        created_at,
        finished_at,
        archived_at,
        task,
    ) = row
    return ArchivedAttempt(
        task_id=task_id,
        attempt=attempt,
        status=status,
        agent_id=agent_id,
        epoch=epoch,
        finished_at=_seconds(finished_at) or 0.0,
        archived_at=_seconds(archived_at) or 0.0,
        result=result,
        error=error,
        exit_code=exit_code,
        timed_out=timed_out,
        duration=duration,
        task_type=task_type,
        task_name=task_name,
        parent_id=parent_id,
        created_at=_seconds(created_at),
        task=task if isinstance(task, dict) else json.loads(task or "{}"),
    )
