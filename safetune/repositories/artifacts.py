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
