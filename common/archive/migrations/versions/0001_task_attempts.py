"""task_attempts: one row per attempt's final state, keyed by (task_id, attempt)

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_attempts",
        # The key that makes a redelivered status event harmless: the archiver inserts with
        # ON CONFLICT (task_id, attempt) DO NOTHING.
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("agent_id", sa.Text(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("timed_out", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        # From the task's Redis hash (immutable after submit); NULL when Redis had lost it.
        sa.Column("task_type", sa.Text(), nullable=True),
        sa.Column("task_name", sa.Text(), nullable=True),
        sa.Column("parent_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "archived_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "task",
            postgresql.JSONB(),
            nullable=False,
            server_default=sa.text("'{}'::jsonb"),
        ),
        sa.PrimaryKeyConstraint("task_id", "attempt", name="task_attempts_pkey"),
        sa.CheckConstraint(
            "status IN ('SUCCESS', 'FAILED', 'CANCELLED')", name="task_attempts_final_status"
        ),
        sa.CheckConstraint("attempt >= 1", name="task_attempts_attempt_positive"),
    )
    # What reads ask besides a task id: the newest finishes, and a composite's children.
    op.create_index("task_attempts_finished_at", "task_attempts", ["finished_at"])
    op.create_index(
        "task_attempts_parent_id",
        "task_attempts",
        ["parent_id"],
        postgresql_where=sa.text("parent_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("task_attempts_parent_id", table_name="task_attempts")
    op.drop_index("task_attempts_finished_at", table_name="task_attempts")
    op.drop_table("task_attempts")
