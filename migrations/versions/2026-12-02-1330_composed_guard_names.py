"""jobs.guard: room for composed guard names ("sap+anchor+constrained")

Revision ID: 7b2e4c1d9a30
Revises: 8b2d4e6f1a3c
Create Date: 2026-12-02 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7b2e4c1d9a30"
down_revision: str | None = "8b2d4e6f1a3c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("guard", existing_type=sa.String(length=16), type_=sa.String(length=64))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("guard", existing_type=sa.String(length=64), type_=sa.String(length=16))
