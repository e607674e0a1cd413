"""What a tenant stores (files, adapters, checkpoints), its quota, and how checkpoints are pruned.

Sizes are the stored blobs' lengths, measured in the database (length() reads the varlena header on
Postgres, not the bytes), so the quota counts exactly what Postgres keeps for the tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.orm import Session

from safetune.config import Settings
from safetune.errors import ErrorCode, SafetuneError
from safetune.models import Adapter, Checkpoint, Job, StoredFile, Tenant


@dataclass(frozen=True)
class CheckpointRetention:
    """A job keeps its newest ``keep_last`` checkpoints, plus the best by validation loss."""

    keep_last: int
    keep_best: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckpointRetention:
        return cls(settings.checkpoint_keep_last, settings.checkpoint_keep_best)


def _sum(session: Session, total: Any, *where: ColumnElement[bool]) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(total), 0)).where(*where)) or 0)


def tenant_storage_bytes(session: Session, tenant_id: str) -> int:
    files = _sum(session, func.length(StoredFile.content), StoredFile.tenant_id == tenant_id)
    own_job = Job.tenant_id == tenant_id
    adapters = _sum(session, Adapter.size_bytes, Adapter.job_id == Job.id, own_job)
    checkpoints = _sum(
        session,
        func.length(Checkpoint.adapter_zip) + func.length(Checkpoint.state_zip),
        Checkpoint.job_id == Job.id,
        own_job,
    )
    return files + adapters + checkpoints


def quota_for(tenant: Tenant, settings: Settings) -> int:
    return (
        tenant.storage_quota_bytes if tenant.storage_quota_bytes is not None else settings.storage_quota_bytes
    )


def _fits(used: int, quota: int, incoming_bytes: int) -> bool:
    # At the quota nothing more fits, not even a job (it will write an adapter and checkpoints).
    return used < quota and used + incoming_bytes <= quota


def job_tenant_has_room(session: Session, job_id: str, settings: Settings, incoming_bytes: int) -> bool:
    """Whether the job's tenant can store ``incoming_bytes`` more (the worker, before a checkpoint)."""
    tenant = session.scalar(select(Tenant).join(Job, Job.tenant_id == Tenant.id).where(Job.id == job_id))
    if tenant is None:
        return False
    used = tenant_storage_bytes(session, tenant.id)
    return _fits(used, quota_for(tenant, settings), incoming_bytes)


def check_storage_quota(session: Session, tenant: Tenant, settings: Settings, incoming_bytes: int) -> None:
    """Refuse new data (an upload of ``incoming_bytes``, or a job that will write an adapter and
    checkpoints: ``incoming_bytes=0``) once the tenant's stored bytes would pass its quota."""
    quota = quota_for(tenant, settings)
    used = tenant_storage_bytes(session, tenant.id)
    if _fits(used, quota, incoming_bytes):
        return
    raise SafetuneError(
        ErrorCode.STORAGE_QUOTA_EXCEEDED,
        f"storage quota exceeded: {used} of {quota} bytes in use, this request needs {incoming_bytes} "
        "more; delete files (DELETE /files/{id}) or finished jobs (DELETE /jobs/{id}) to make room",
        used_bytes=used,
        quota_bytes=quota,
        requested_bytes=incoming_bytes,
    )


def prune_checkpoints(session: Session, job_id: str, retention: CheckpointRetention) -> list[int]:
    """Delete the job's checkpoints outside the retention; returns the steps deleted."""
    rows = session.execute(
        select(Checkpoint.id, Checkpoint.step, Checkpoint.val_loss).where(Checkpoint.job_id == job_id)
    ).all()
    keep = {row.id for row in sorted(rows, key=lambda r: r.step, reverse=True)[: retention.keep_last]}
    scored = [r for r in rows if r.val_loss is not None]
    if retention.keep_best and scored:
        # The same choice as GET …/checkpoints/best: lowest validation loss, earliest on ties.
        keep.add(min(scored, key=lambda r: (r.val_loss, r.step)).id)
    doomed = [r for r in rows if r.id not in keep]
    if doomed:
        session.execute(delete(Checkpoint).where(Checkpoint.id.in_([r.id for r in doomed])))
    return sorted(r.step for r in doomed)


def drop_resume_state(session: Session, job_id: str) -> None:
    """A finished job is never resumed: its checkpoints keep the adapter, not the trainer state."""
    session.execute(
        update(Checkpoint)
        .where(Checkpoint.job_id == job_id, func.length(Checkpoint.state_zip) > 0)
        .values(state_zip=b"")
        .execution_options(synchronize_session=False)
    )
