"""job_stage_progress: a long stage (the safety evaluation) reports done/total and an ETA on the job
row, so GET /jobs/{id} shows it (issue 14)

Revision ID: 4e9a1c7b3d25
Revises: 7b2e4c1d9a30
Create Date: 2026-12-10 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4e9a1c7b3d25"
down_revision: str | None = "7b2e4c1d9a30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("stage_progress", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("stage_progress")
