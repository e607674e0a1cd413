"""files: deleted_at and a (tenant, created_at) index; jobs: trained_tokens and result_file_id;
job_step_metrics for the per-step result CSV (issue 13 §1)

Revision ID: 3c1f0a9d2b7e
Revises: 69ef551cdd0f
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3c1f0a9d2b7e"
down_revision: str | None = "69ef551cdd0f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_files_tenant_created", ["tenant_id", "created_at"], unique=False)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trained_tokens", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("result_file_id", sa.String(length=64), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_jobs_result_file_id_files"), "files", ["result_file_id"], ["id"]
        )
    op.create_table(
        "job_step_metrics",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("step", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=True),
        sa.Column("valid_loss", sa.Float(), nullable=True),
        sa.Column("learning_rate", sa.Float(), nullable=True),
        sa.Column("tokens", sa.Integer(), nullable=True),
        sa.Column("elapsed_seconds", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_step_metrics_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "step", name=op.f("pk_job_step_metrics")),
    )


def downgrade() -> None:
    op.drop_table("job_step_metrics")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_jobs_result_file_id_files"), type_="foreignkey")
        batch_op.drop_column("result_file_id")
        batch_op.drop_column("trained_tokens")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index("ix_files_tenant_created")
        batch_op.drop_column("deleted_at")
