"""The archive's schema, migrated by Alembic on a real PostgreSQL (the Debian package)."""

from __future__ import annotations

import threading

import psycopg
import pytest

from common.archive import migrate
from common.archive.store import ArchiveRow, PostgresArchive

pytestmark = pytest.mark.integration


def tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {name for (name,) in rows}


def test_upgrade_to_head_then_downgrade_to_base_then_upgrade_again_works(archive_dsn):
    assert migrate.upgrade(archive_dsn) == migrate.head()
    assert "task_attempts" in tables(archive_dsn)
    assert migrate.downgrade(archive_dsn, "base") is None
    assert "task_attempts" not in tables(archive_dsn)
    assert migrate.upgrade(archive_dsn) == migrate.head()
    assert "task_attempts" in tables(archive_dsn)


def test_two_migrators_at_once_both_succeed_and_leave_one_schema(archive_dsn):
    # The advisory lock serialises them: the second finds the schema at head.
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate.upgrade(archive_dsn)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert migrate.current(archive_dsn) == migrate.head()


def test_writing_the_same_attempt_twice_keeps_one_row_and_reports_it_inserted_once(archive_dsn):
    migrate.upgrade(archive_dsn)
    archive = PostgresArchive(archive_dsn)
    row = ArchiveRow(
        task_id="6f1c1f2e-1b7e-4a8e-9d1e-0c2b3a4d5e6f",
        attempt=1,
        status="SUCCESS",
        agent_id="agent-1",
        epoch=7,
        finished_at=1_700_000_000.5,
        result="out\x00put",
        task={"taskName": "n\x00", "status": "SUCCESS"},
    )
    try:
        assert archive.write([row, row]) == {row.key}
        assert archive.write([row]) == set()
        found = archive.get(row.task_id)
        assert found is not None and len(found.attempts) == 1
        # PostgreSQL text cannot hold NUL: it is replaced, not a refused batch.
        assert found.last.result == "out\ufffdput"
        assert found.last.finished_at == pytest.approx(1_700_000_000.5)
        assert archive.get("no-such-task") is None
    finally:
        archive.close()
