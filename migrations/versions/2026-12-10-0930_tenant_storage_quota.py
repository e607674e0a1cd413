"""tenants.storage_quota_bytes: a per-tenant override of SAFETUNE_STORAGE_QUOTA_BYTES (issue 12,
fault 6)

Revision ID: 5f7a9c3e2b14
Revises: 8d2e4b6a1c90
Create Date: 2026-12-10 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5f7a9c3e2b14"
down_revision: str | None = "8d2e4b6a1c90"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("storage_quota_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("storage_quota_bytes")
