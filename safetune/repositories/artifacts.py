"""Read access to job outputs (adapter zip, safety report, checkpoints), scoped by tenant.

Storage is Postgres today; callers only see these functions, so blobs can move to S3 later.
"""

from __future__ import annotations

from sqlalchemy import func, select
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


def read_adapter_chunk(session: Session, job_id: str, offset: int, length: int) -> bytes:
    """``length`` bytes of the adapter zip from byte ``offset`` (0-based), read in the database so
    that a download never holds the whole blob in memory (substr works on bytea and SQLite blobs)."""
    chunk = session.scalar(
        select(func.substr(Adapter.content, offset + 1, length)).where(Adapter.job_id == job_id)
    )
    return bytes(chunk or b"")


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
) -> Checkpoint | None:
    """One checkpoint with its adapter zip; ``step=None`` means the best by validation loss."""
    stmt = (
        select(Checkpoint)
        .join(Job, Job.id == Checkpoint.job_id)
        .where(Checkpoint.job_id == job_id, Job.tenant_id == tenant_id)
        .options(undefer(Checkpoint.adapter_zip))
    )
    if step is None:
        stmt = stmt.where(Checkpoint.val_loss.is_not(None)).order_by(Checkpoint.val_loss, Checkpoint.step)
    else:
        stmt = stmt.where(Checkpoint.step == step)
    return session.scalars(stmt.limit(1)).first()


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
