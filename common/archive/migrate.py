"""Bring an archive database to a schema revision (Alembic), one migrator at a time.

`tasklab archive migrate` runs it, and so does every archiver when it starts. Two archivers
starting together would both see "not at head" and both run the same CREATE TABLE; one would
fail. So the migration runs in one transaction that first takes a PostgreSQL advisory lock:
the second waits, then finds the schema at head and does nothing.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock's key: any constant of this application's own ("tasklab" in ASCII).
LOCK_KEY = 0x7461736B6C6162


def engine_for(dsn: str) -> Engine:
    """A SQLAlchemy engine on psycopg 3 for a libpq-style `postgresql://` DSN."""
    url = dsn
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            url = "postgresql+psycopg://" + dsn[len(prefix) :]
    return create_engine(url, pool_pre_ping=True)


def config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head() -> str:
    head = ScriptDirectory.from_config(config()).get_current_head()
    assert head is not None
    return head


def current(dsn: str) -> str | None:
    engine = engine_for(dsn)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _locked(dsn: str, action) -> None:
    engine = engine_for(dsn)
    try:
        with engine.begin() as conn:
            # Released when this transaction ends, whatever happens to the process.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            cfg = config()
            cfg.attributes["connection"] = conn
            action(cfg)
    finally:
        engine.dispose()


def upgrade(dsn: str, revision: str = "head") -> str | None:
    """Upgrade to `revision`; returns the revision the database is at afterwards."""
    _locked(dsn, lambda cfg: command.upgrade(cfg, revision))
    return current(dsn)


def downgrade(dsn: str, revision: str = "base") -> str | None:
    _locked(dsn, lambda cfg: command.downgrade(cfg, revision))
    return current(dsn)
