"""Alembic's environment for the archive: always given a live connection by common.archive.migrate.

No alembic.ini and no URL in a file: `migrate.upgrade(dsn)` opens the connection, takes the
advisory lock on it and hands it over in `config.attributes["connection"]`, so the migration
runs inside the transaction that holds the lock (PostgreSQL's DDL is transactional: a failed
migration leaves the schema as it was).
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run the archive's migrations with `tasklab archive migrate` "
        "(common.archive.migrate), which gives them a locked connection"
    )
# Offline mode (`--sql`) is not offered: the lock needs a live connection.
context.configure(connection=connection, target_metadata=None, transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
