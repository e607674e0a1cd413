"""webhook_outbox: job events written with the status change and drained by the workers
(at-least-once delivery); webhook_deliveries.event_id; tenant secrets in the Standard Webhooks
format whsec_<base64> (issue 12 §8)

Revision ID: 8b2d4e6f1a3c
Revises: 2b8e6d4f0a37
Create Date: 2026-12-10 09:00:00
"""

import base64
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8b2d4e6f1a3c"
down_revision: str | None = "2b8e6d4f0a37"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

tenants = sa.table("tenants", sa.column("id", sa.String), sa.column("webhook_secret", sa.String))


def _rewrite_secrets(convert: Callable[[str], str]) -> None:
    connection = op.get_bind()
    for tenant_id, secret in connection.execute(sa.select(tenants.c.id, tenants.c.webhook_secret)).all():
        new = convert(secret)
        if new != secret:
            connection.execute(tenants.update().where(tenants.c.id == tenant_id).values(webhook_secret=new))


def _hex_to_whsec(secret: str) -> str:
    # The same key bytes, so a receiver that decodes the secret keeps verifying with it.
    if secret.startswith("whsec_"):
        return secret
    try:
        key = bytes.fromhex(secret)
    except ValueError:
        key = secret.encode()
    return "whsec_" + base64.b64encode(key).decode()


def _whsec_to_hex(secret: str) -> str:
    return base64.b64decode(secret[6:]).hex() if secret.startswith("whsec_") else secret


def upgrade() -> None:
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_webhook_outbox_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_outbox")),
    )
    with op.batch_alter_table("webhook_outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_outbox_job_id"), ["job_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_webhook_outbox_next_attempt_at"), ["next_attempt_at"], unique=False
        )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event_id", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_webhook_deliveries_event_id"), ["event_id"], unique=False)
    _rewrite_secrets(_hex_to_whsec)


def downgrade() -> None:
    _rewrite_secrets(_whsec_to_hex)
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_event_id"))
        batch_op.drop_column("event_id")
    with op.batch_alter_table("webhook_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_outbox_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_webhook_outbox_job_id"))
    op.drop_table("webhook_outbox")
