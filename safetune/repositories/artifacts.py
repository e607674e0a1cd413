"""Read access to job outputs (adapter zip, safety report, checkpoints), scoped by tenant.

Storage is Postgres today; callers only see these functions, so blobs can move to S3 later.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, undefer

from safetune.models import Adapter, Checkpoint, Job, SafetyReport


def get_report_for_tenant(session: Session, tenant_id: str, job_id: str) -> SafetyReport | None:
    stmt = (
        select(SafetyReport)
        .join(Job, Job.id == SafetyReport.job_id)
        .where(SafetyReport.job_id == job_id, Job.tenant_id == tenant_id)
    )
    return session.scalar(stmt)


def get_adapter_for_tenant(
    session: Session, tenant_id: str, job_id: str, *, with_content: bool = True
) -> Adapter | None:
    stmt = (
        select(Adapter)
        .join(Job, Job.id == Adapter.job_id)
        .where(Adapter.job_id == job_id, Job.tenant_id == tenant_id)
    )
    if with_content:
        stmt = stmt.options(undefer(Adapter.content))
    return session.scalar(stmt)


def _read_chunk(session: Session, blob: Any, where: ColumnElement[bool], offset: int, length: int) -> bytes:
    # substr in the database (bytea and SQLite blobs alike): a download never holds a whole blob.
    return bytes(session.scalar(select(func.substr(blob, offset + 1, length)).where(where)) or b"")


def read_adapter_chunk(session: Session, job_id: str, offset: int, length: int) -> bytes:
    """``length`` bytes of the adapter zip from byte ``offset`` (0-based)."""
    return _read_chunk(session, Adapter.content, Adapter.job_id == job_id, offset, length)


def read_checkpoint_chunk(session: Session, checkpoint_id: str, offset: int, length: int) -> bytes:
    """``length`` bytes of a checkpoint's adapter zip from byte ``offset`` (0-based)."""
    return _read_chunk(session, Checkpoint.adapter_zip, Checkpoint.id == checkpoint_id, offset, length)


def list_checkpoints_for_tenant(session: Session, tenant_id: str, job_id: str) -> list[Checkpoint]:
    stmt = (
        select(Checkpoint)
        .join(Job, Job.id == Checkpoint.job_id)
        .where(Checkpoint.job_id == job_id, Job.tenant_id == tenant_id)
        .order_by(Checkpoint.step)
    )
    return list(session.scalars(stmt))


def get_checkpoint_for_tenant(
    session: Session, tenant_id: str, job_id: str, step: int | None
) -> tuple[Checkpoint, int] | None:
    """One checkpoint (its blobs not loaded: read_checkpoint_chunk streams the adapter) and the
    byte length of its adapter zip; ``step=None`` means the best by validation loss."""
    stmt = (
        select(Checkpoint, func.length(Checkpoint.adapter_zip))
        .join(Job, Job.id == Checkpoint.job_id)
        .where(Checkpoint.job_id == job_id, Job.tenant_id == tenant_id)
    )
    if step is None:
        stmt = stmt.where(Checkpoint.val_loss.is_not(None)).order_by(Checkpoint.val_loss, Checkpoint.step)
    else:
        stmt = stmt.where(Checkpoint.step == step)
    row = session.execute(stmt.limit(1)).first()
    return (row[0], int(row[1] or 0)) if row else None


def best_checkpoint_step(checkpoints: list[Checkpoint]) -> int | None:
    """The step with the lowest validation loss (earliest on ties), if any checkpoint has one."""
    scored = [c for c in checkpoints if c.val_loss is not None]
    return min(scored, key=lambda c: (c.val_loss, c.step)).step if scored else None


def verdicts_for_tenant(session: Session, tenant_id: str, job_ids: list[str]) -> dict[str, str]:
    """job id → safety verdict for those of ``job_ids`` that have a report (one query for a page)."""
    if not job_ids:
        return {}
    stmt = (
        select(SafetyReport.job_id, SafetyReport.verdict)
        .join(Job, Job.id == SafetyReport.job_id)
        .where(SafetyReport.job_id.in_(job_ids), Job.tenant_id == tenant_id)
    )
    return {job_id: verdict for job_id, verdict in session.execute(stmt)}
