"""The archive of final states in PostgreSQL (stage 5): schema, migrations, writer, reader, role.

- migrations/: the schema, by Alembic; `tasklab archive migrate` (and every archiver at start,
  under an advisory lock) brings a database to the newest revision (migrate.py).
- store.py: `PostgresArchive`, the one place that speaks SQL: the idempotent batch write and the
  `TaskArchive` port's read.
- archiver.py: the role, a consumer of task-status-update-topic in its own group.
- outbox.py: its second consumer, of the Redis stream archive:outbox, where the scripts that end
  a task without an agent's report append it.
"""
