"""task_attempts.status may be SKIPPED: a composite's child that never ran, archived from the
outbox (common/archive/outbox.py)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "task_attempts_final_status"


def upgrade() -> None:
    op.drop_constraint(NAME, "task_attempts", type_="check")
    op.create_check_constraint(
        NAME, "task_attempts", "status IN ('SUCCESS', 'FAILED', 'CANCELLED', 'SKIPPED')"
    )


def downgrade() -> None:
    # NOT VALID: the SKIPPED rows already archived stay (a downgrade loses no history); only
    # new rows are held to the older rule.
    op.drop_constraint(NAME, "task_attempts", type_="check")
    op.execute(
        f"ALTER TABLE task_attempts ADD CONSTRAINT {NAME} "
        "CHECK (status IN ('SUCCESS', 'FAILED', 'CANCELLED')) NOT VALID"
    )
