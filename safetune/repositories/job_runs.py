"""Worker-side job state transitions. Each function only adds/flushes; the caller owns the transaction.

Every transition is a conditional UPDATE on the current status, so two workers (a redelivered task)
or a worker racing a cancel request can never both win.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import null, select, update
from sqlalchemy.orm import Session

from safetune import webhooks
from safetune.errors import ErrorCode
from safetune.models import (
    ACTIVE_STATUSES,
    Adapter,
    BaseEvalCache,
    Checkpoint,
    Job,
    JobStatus,
    SafetyReport,
    StoredFile,
    Tenant,
    utcnow,
)
from safetune.repositories import job_results, storage
from safetune.repositories.jobs import add_event, tenant_can_start


def claim_job(session: Session, job_id: str, worker_id: str) -> bool:
    """Atomically move a queued job to running. False means someone else has it (or it was cancelled)."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED, Job.cancel_requested_at.is_(None))
        .values(
            status=JobStatus.RUNNING,
            stage="starting",
            started_at=now,
            heartbeat_at=now,
            attempt=Job.attempt + 1,
            worker_id=worker_id,
        )
        .execution_options(synchronize_session=False)
    )
    claimed = result.rowcount == 1  # type: ignore[attr-defined]
    if claimed:
        add_event(session, job_id, "started", f"training started on {worker_id}", data={"worker": worker_id})
    return claimed


def tenant_at_capacity(session: Session, job_id: str, default_limit: int) -> bool:
    """Whether the job's tenant already runs its maximum of concurrent jobs.

    Locks the tenant row first, so that two workers claiming two jobs of one tenant at the same
    moment are serialised and cannot both slip under the limit (Postgres; SQLite has one writer).
    """
    tenant_id = session.execute(select(Job.tenant_id).where(Job.id == job_id)).scalar_one_or_none()
    if tenant_id is None:
        return False
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    return not tenant_can_start(session, tenant_id, max_concurrent=default_limit)


def load_job(session: Session, job_id: str) -> Job:
    return session.execute(select(Job).where(Job.id == job_id)).scalar_one()


def load_file_content(session: Session, file_id: str) -> bytes:
    return session.execute(select(StoredFile.content).where(StoredFile.id == file_id)).scalar_one()


def _active(job_id: str) -> Any:
    return (Job.id == job_id) & Job.status.in_([s.value for s in ACTIVE_STATUSES])


def heartbeat(session: Session, job_id: str, **progress: Any) -> bool:
    """Refresh the heartbeat (and any progress columns). False if the job is no longer active."""
    result = session.execute(
        update(Job)
        .where(_active(job_id))
        .values(heartbeat_at=utcnow(), **progress)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def set_stage(session: Session, job_id: str, stage: str, status: JobStatus | None = None) -> None:
    # A new stage starts without progress: the previous stage's done/total no longer describe it.
    values: dict[str, Any] = {"stage": stage, "stage_progress": null(), "heartbeat_at": utcnow()}
    if status is not None:
        values["status"] = status
    session.execute(
        update(Job).where(_active(job_id)).values(**values).execution_options(synchronize_session=False)
    )


def cancel_requested(session: Session, job_id: str) -> bool:
    requested = session.execute(select(Job.cancel_requested_at).where(Job.id == job_id)).scalar_one()
    return requested is not None


def _finish(session: Session, job_id: str, status: JobStatus, **values: Any) -> bool:
    result = session.execute(
        update(Job)
        .where(_active(job_id))
        .values(status=status, finished_at=utcnow(), stage=None, stage_progress=null(), **values)
        .execution_options(synchronize_session=False)
    )
    finished = result.rowcount == 1  # type: ignore[attr-defined]
    if finished:  # every worker-side terminal transition (incl. the reaper) announces itself
        webhooks.announce(session, job_id, status.value)
        storage.drop_resume_state(session, job_id)
    return finished


def mark_succeeded(
    session: Session,
    job_id: str,
    *,
    adapter_zip: bytes,
    adapter_sha256: str,
    report: dict[str, Any],
    verdict: str,
    base_harmful_score: float | None,
    tuned_harmful_score: float | None,
    retention: storage.CheckpointRetention,
) -> bool:
    """Adapter, report, result file and final status land together or not at all (caller's
    transaction)."""
    if not _finish(session, job_id, JobStatus.SUCCEEDED):
        return False
    job_results.store_results(session, job_id, adapter_zip=adapter_zip, adapter_sha256=adapter_sha256)
    storage.prune_checkpoints(session, job_id, retention)
    session.add(
        Adapter(job_id=job_id, content=adapter_zip, sha256=adapter_sha256, size_bytes=len(adapter_zip))
    )
    session.add(
        SafetyReport(
            job_id=job_id,
            schema_version=int(report.get("schema_version", 1)),
            verdict=verdict,
            base_harmful_score=base_harmful_score,
            tuned_harmful_score=tuned_harmful_score,
            report=report,
        )
    )
    add_event(
        session, job_id, "succeeded", f"job succeeded; safety verdict: {verdict}", data={"verdict": verdict}
    )
    return True


def mark_failed(session: Session, job_id: str, code: ErrorCode, message: str) -> bool:
    if not _finish(session, job_id, JobStatus.FAILED, error_code=code.code, error_message=message[:4000]):
        return False
    add_event(session, job_id, "failed", message[:4000], data={"code": code.code}, level="error")
    return True


def mark_cancelled(session: Session, job_id: str) -> bool:
    if not _finish(session, job_id, JobStatus.CANCELLED):
        return False
    add_event(session, job_id, "cancelled", "job cancelled at the user's request")
    return True


def requeue(session: Session, job_id: str, reason: str) -> bool:
    """Put an interrupted job back in the queue; it resumes from its last checkpoint."""
    result = session.execute(
        update(Job)
        .where(_active(job_id))
        .values(status=JobStatus.QUEUED, stage=None, queued_at=utcnow(), worker_id=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    add_event(session, job_id, "requeued", reason, level="warning")
    return True


def save_checkpoint(
    session: Session,
    job_id: str,
    *,
    step: int,
    train_loss: float | None,
    val_loss: float | None,
    adapter_zip: bytes,
    state_zip: bytes,
    sha256: str,
    retention: storage.CheckpointRetention,
) -> None:
    """Store a checkpoint, then prune the job's checkpoints to the retention (newest N + best)."""
    existing = session.execute(
        select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step)
    ).scalar_one_or_none()
    if existing is not None:  # a resumed attempt re-reaching the same step keeps the first copy
        return
    session.add(
        Checkpoint(
            job_id=job_id,
            step=step,
            train_loss=train_loss,
            val_loss=val_loss,
            adapter_zip=adapter_zip,
            state_zip=state_zip,
            sha256=sha256,
        )
    )
    session.flush()
    pruned = storage.prune_checkpoints(session, job_id, retention)
    add_event(
        session,
        job_id,
        "checkpoint",
        f"checkpoint saved at step {step}",
        data={"step": step, "pruned_steps": pruned},
    )


def latest_checkpoint_state(session: Session, job_id: str) -> tuple[int, bytes] | None:
    row = session.execute(
        select(Checkpoint.step, Checkpoint.state_zip)
        .where(Checkpoint.job_id == job_id)
        .order_by(Checkpoint.step.desc())
        .limit(1)
    ).first()
    return (row[0], row[1]) if row else None


def stale_active_jobs(session: Session, older_than: timedelta) -> Sequence[Job]:
    cutoff = utcnow() - older_than
    return (
        session.execute(
            select(Job).where(
                Job.status.in_([s.value for s in ACTIVE_STATUSES]),
                (Job.heartbeat_at.is_(None)) | (Job.heartbeat_at < cutoff),
            )
        )
        .scalars()
        .all()
    )


def store_base_eval(
    session: Session, job_id: str, *, key: str, base_model: str, shared: bool, result: dict[str, Any]
) -> None:
    """Cache a base-model evaluation: shared by all tenants, or scoped to the job's tenant."""
    tenant_id = None if shared else session.scalar(select(Job.tenant_id).where(Job.id == job_id))
    if find_base_eval(session, key, tenant_id) is None:
        session.add(BaseEvalCache(cache_key=key, tenant_id=tenant_id, base_model=base_model, result=result))
        session.flush()


def find_base_eval(session: Session, key: str, tenant_id: str | None) -> dict[str, Any] | None:
    """The cached result under ``key`` in one scope: ``tenant_id=None`` is the shared scope only."""
    scope = BaseEvalCache.tenant_id.is_(None) if tenant_id is None else BaseEvalCache.tenant_id == tenant_id
    return session.scalars(
        select(BaseEvalCache.result).where(BaseEvalCache.cache_key == key, scope).limit(1)
    ).first()
