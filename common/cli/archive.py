"""`tasklab archive migrate|downgrade|current`: the PostgreSQL archive's schema (stage 5).

Every archiver migrates at start (under an advisory lock); this is the same migration on
demand, for an operator who upgrades the schema before the roles, or goes back a revision.
"""

from __future__ import annotations

from typing import Annotated

import typer

from common.cli.errors import fail
from common.config import get_settings

archive_app = typer.Typer(
    help="The PostgreSQL archive of final states (TASKLAB_ARCHIVE_DSN).", no_args_is_help=True
)


def _dsn() -> str:
    dsn = get_settings().archive_dsn
    if not dsn:
        fail("no archive configured: set TASKLAB_ARCHIVE_DSN", 2)
    return dsn


def _migrate():
    try:
        from common.archive import migrate
    except ImportError as exc:
        fail(f"the archive needs the stage5 extra ({exc}); `make setup` installs it", 2)
    return migrate


@archive_app.command("migrate")
def migrate_command(
    revision: Annotated[str, typer.Option(help="Revision to upgrade to.")] = "head",
) -> None:
    """Upgrade the archive's schema to a revision (default: the newest)."""
    migrate = _migrate()
    _run(migrate, migrate.upgrade, revision)


@archive_app.command("downgrade")
def downgrade_command(
    revision: Annotated[str, typer.Argument(help="Revision to go back to; base = no schema.")],
) -> None:
    """Downgrade the archive's schema to an older revision (base drops the archive's tables)."""
    migrate = _migrate()
    _run(migrate, migrate.downgrade, revision)


def _run(migrate, step, revision: str) -> None:
    import sqlalchemy.exc

    dsn = _dsn()
    try:
        before = migrate.current(dsn)
        after = step(dsn, revision)
    except sqlalchemy.exc.OperationalError as exc:
        fail(f"cannot reach the archive ({str(exc.orig).strip().splitlines()[0]})", 1)
    except Exception as exc:  # noqa: BLE001 - Alembic's errors for a bad revision, in one line
        fail(f"migration to {revision} failed: {exc}", 1)
    typer.echo(f"archive schema: {before or 'empty'} -> {after or 'empty'} (head {migrate.head()})")


@archive_app.command("current")
def current_command() -> None:
    """The archive's schema revision, and the newest one this tasklab knows."""
    import sqlalchemy.exc

    migrate = _migrate()
    try:
        at = migrate.current(_dsn())
    except sqlalchemy.exc.OperationalError as exc:
        fail(f"cannot reach the archive ({str(exc.orig).strip().splitlines()[0]})", 1)
    typer.echo(f"archive schema: {at or 'empty'} (head {migrate.head()})")
