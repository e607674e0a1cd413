"""base_eval_cache: keyed by the model folder's content digest, user prompt sets scoped by tenant
(issue 12, fault 5)

The old rows were keyed by the model's name, so they may hold a rebuilt model's stale answers and
other tenants' prompts: they are dropped, not migrated (a cache refills itself).

Revision ID: 8d2e4b6a1c90
Revises: 3c1f0a9d2b7e
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8d2e4b6a1c90"
down_revision: str | None = "3c1f0a9d2b7e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_table("base_eval_cache")
    op.create_table(
        "base_eval_cache",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cache_key", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("base_model", sa.String(length=100), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_base_eval_cache_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_base_eval_cache")),
        sa.UniqueConstraint("cache_key", "tenant_id", name=op.f("uq_base_eval_cache_cache_key")),
    )
    op.create_index(op.f("ix_base_eval_cache_tenant_id"), "base_eval_cache", ["tenant_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_base_eval_cache_tenant_id"), table_name="base_eval_cache")
    op.drop_table("base_eval_cache")
    op.create_table(
        "base_eval_cache",
        sa.Column("cache_key", sa.String(length=128), nullable=False),
        sa.Column("base_model", sa.String(length=100), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cache_key", name=op.f("pk_base_eval_cache")),
    )
