"""Tenant-scoped job queries and API-side transitions (create, cancel). Worker-side transitions
(claim, progress, finish, fail, reap) live in job_runs.py. Only add/flush here (STYLE rule 8)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session

from safetune import webhooks
from safetune.errors import ErrorCode, SafetuneError
from safetune.models import (
    ACTIVE_STATUSES,
    IdempotencyRecord,
    Job,
    JobEvent,
    JobStatus,
    StoredFile,
    Tenant,
    utcnow,
)
from safetune.schemas import JobSpec


def add_event(
    session: Session,
    job_id: str,
    type: str,
    message: str,
    *,
    level: str = "info",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    """Append to the job's event log (visible to the user at GET /jobs/{id}/events)."""
    event = JobEvent(job_id=job_id, type=type, message=message, level=level, data=data)
    session.add(event)
    session.flush()
    return event


def create_job(
    session: Session,
    tenant_id: str,
    spec: JobSpec,
    *,
    training_file_id: str,
    validation_file_id: str | None = None,
    eval_file_id: str | None = None,
    idempotency_key: str | None = None,
) -> Job:
    """Insert a queued job and its "queued" event. The caller commits, then enqueues."""
    now = utcnow()
    job = Job(
        tenant_id=tenant_id,
        status=JobStatus.QUEUED.value,
        base_model=spec.base_model,
        guard=spec.guard,
        suffix=spec.suffix,
        spec=spec.model_dump(mode="json"),
        training_file_id=training_file_id,
        validation_file_id=validation_file_id,
        eval_file_id=eval_file_id,
        webhook_url=spec.webhook_url,
        idempotency_key=idempotency_key,
        step=0,
        attempt=0,
        created_at=now,
        queued_at=now,
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, "queued", "job queued", data={"base_model": spec.base_model})
    return job


def get_job(session: Session, job_id: str) -> Job | None:
    """Unscoped lookup, for the worker only: API code must use get_job_for_tenant."""
    return session.get(Job, job_id)


def get_job_for_tenant(session: Session, tenant_id: str, job_id: str) -> Job | None:
    """Another tenant's job id returns None, exactly like a missing one (STYLE rule 9)."""
    return session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))


def list_jobs(
    session: Session, tenant_id: str, *, after: str | None = None, limit: int = 20
) -> tuple[list[Job], bool]:
    """Newest first, keyset-paginated on (created_at, id); ``after`` is the last id of the previous page.

    Returns (jobs, has_more).
    """
    stmt = select(Job).where(Job.tenant_id == tenant_id)
    if after is not None:
        cursor = get_job_for_tenant(session, tenant_id, after)
        if cursor is None:
            raise SafetuneError(ErrorCode.REQUEST_INVALID, "unknown pagination cursor", param="after")
        stmt = stmt.where(
            or_(
                Job.created_at < cursor.created_at,
                and_(Job.created_at == cursor.created_at, Job.id < cursor.id),
            )
        )
    rows = list(session.scalars(stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def list_events(
    session: Session, tenant_id: str, job_id: str, *, after: int | None = None, limit: int = 100
) -> tuple[list[JobEvent], bool]:
    """Events in creation order after event id ``after``. Returns (events, has_more)."""
    stmt = (
        select(JobEvent)
        .join(Job, Job.id == JobEvent.job_id)
        .where(JobEvent.job_id == job_id, Job.tenant_id == tenant_id)
    )
    if after is not None:
        stmt = stmt.where(JobEvent.id > after)
    rows = list(session.scalars(stmt.order_by(JobEvent.id).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def request_cancel(session: Session, job: Job) -> Job:
    """Queued jobs are cancelled at once; running/evaluating ones get a flag the worker polls.

    Raises JOB_NOT_CANCELLABLE for terminal jobs. Idempotent while a cancel is pending.
    """
    # Lock the row so that a worker claiming the job at the same moment serialises with us.
    session.refresh(job, with_for_update=True)
    status = job.status_enum()
    now = utcnow()
    if status.is_terminal():
        raise SafetuneError(
            ErrorCode.JOB_NOT_CANCELLABLE, f"job {job.id} is already {status.value}", status=status.value
        )
    if status is JobStatus.QUEUED:
        job.status = JobStatus.CANCELLED.value
        job.stage = None  # it may have been waiting for a slot (job_queue.park)
        job.cancel_requested_at = now
        job.finished_at = now
        add_event(session, job.id, "cancelled", "job cancelled before it started")
        webhooks.announce(session, job.id, JobStatus.CANCELLED.value)
    elif job.cancel_requested_at is None:
        job.cancel_requested_at = now
        add_event(session, job.id, "cancel_requested", "cancellation requested; the worker will stop")
    session.flush()
    return job


def count_jobs(session: Session, tenant_id: str, statuses: tuple[JobStatus, ...]) -> int:
    stmt = select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id, Job.status.in_(statuses))
    return int(session.scalar(stmt) or 0)


def check_queue_quota(session: Session, tenant: Tenant, *, max_queued: int) -> None:
    """Refuse a new job when the tenant already has ``max_queued`` waiting (429 quota_exceeded).

    ``max_queued`` is the service default; a per-tenant override on the tenant row wins.
    """
    # Lock the tenant row: two concurrent submissions then count one after the other, so the limit
    # holds exactly on Postgres (SQLite serialises writers anyway and ignores FOR UPDATE).
    session.execute(select(Tenant.id).where(Tenant.id == tenant.id).with_for_update())
    limit = tenant.max_queued_jobs or max_queued
    queued = count_jobs(session, tenant.id, (JobStatus.QUEUED,))
    if queued >= limit:
        raise SafetuneError(ErrorCode.QUOTA_EXCEEDED, f"{queued} jobs already queued; the limit is {limit}")


def tenant_can_start(session: Session, tenant_id: str, *, max_concurrent: int) -> bool:
    """Whether the tenant is below its running-jobs limit; the worker asks this before claiming.

    Submission does not enforce the running limit: extra jobs simply wait in the queue.
    """
    tenant = session.get(Tenant, tenant_id)
    limit = (tenant.max_concurrent_jobs if tenant else None) or max_concurrent
    return count_jobs(session, tenant_id, ACTIVE_STATUSES) < limit


def list_events_newest_first(
    session: Session, tenant_id: str, job_id: str, *, before: int | None = None, limit: int = 20
) -> tuple[list[JobEvent], bool]:
    """Events newest first (OpenAI's order), older than event id ``before``. Returns (events, has_more)."""
    stmt = (
        select(JobEvent)
        .join(Job, Job.id == JobEvent.job_id)
        .where(JobEvent.job_id == job_id, Job.tenant_id == tenant_id)
    )
    if before is not None:
        stmt = stmt.where(JobEvent.id < before)
    rows = list(session.scalars(stmt.order_by(JobEvent.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def list_succeeded_jobs(session: Session, tenant_id: str) -> list[Job]:
    """The tenant's succeeded jobs (its fine-tuned models), oldest first."""
    stmt = (
        select(Job)
        .where(Job.tenant_id == tenant_id, Job.status == JobStatus.SUCCEEDED)
        .order_by(Job.finished_at, Job.id)
    )
    return list(session.scalars(stmt))


def delete_finished_job(session: Session, job: Job) -> None:
    """Delete a finished job with everything it produced: events, metrics, checkpoints, adapter,
    report, webhook deliveries (foreign-key cascades) and its result file.

    Raises JOB_NOT_FINISHED for a job that is queued or running: its worker may still write to it
    (an adapter, a checkpoint), so it must be cancelled first, and deleted once it has stopped. The
    datasets it trained on are the tenant's own files and stay (DELETE /files/{id}), except those
    already deleted, whose rows were only kept because this job named them.
    """
    session.refresh(job, with_for_update=True)  # serialises with a worker finishing it right now
    status = job.status_enum()
    if not status.is_terminal():
        raise SafetuneError(
            ErrorCode.JOB_NOT_FINISHED,
            f"job {job.id} is {status.value}; cancel it (POST /jobs/{job.id}/cancel) and delete it "
            "once it is cancelled",
            param="job_id",
            status=status.value,
        )
    inputs = {job.training_file_id, job.validation_file_id, job.eval_file_id} - {None}
    result_file_id = job.result_file_id
    session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.tenant_id == job.tenant_id,
            IdempotencyRecord.scope == "jobs",
            IdempotencyRecord.resource_id == job.id,
        )
    )
    session.execute(delete(Job).where(Job.id == job.id).execution_options(synchronize_session=False))
    session.expunge(job)
    still_named = or_(
        Job.training_file_id == StoredFile.id,
        Job.validation_file_id == StoredFile.id,
        Job.eval_file_id == StoredFile.id,
        Job.result_file_id == StoredFile.id,
    )
    orphans = or_(
        StoredFile.id == result_file_id,
        and_(StoredFile.id.in_(inputs), StoredFile.deleted_at.is_not(None)),
    )
    session.execute(
        delete(StoredFile)
        .where(StoredFile.tenant_id == job.tenant_id, orphans, ~select(Job.id).where(still_named).exists())
        .execution_options(synchronize_session=False)
    )
    session.flush()
