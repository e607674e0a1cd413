"""Queued jobs and their broker messages: which job has a message in flight, and who may send one.

A queued job has at most one train message in the broker. A worker that receives it while the job's
tenant is at its concurrent-job limit *parks* the job (stage `waiting_for_slot`: no message in flight)
instead of sending it again, so a busy tenant cannot multiply its own messages, and an embedded runner
cannot spin on it. The reaper wakes parked jobs when their tenant has a free slot and re-sends
messages that were lost; each is one `UPDATE ... RETURNING` claim, so of several reapers ticking at
once only one sends a given job. Only add/flush here; the caller commits, then sends.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from safetune.models import ACTIVE_STATUSES, Job, JobStatus, Tenant, utcnow
from safetune.repositories.jobs import add_event

WAITING_FOR_SLOT = "waiting_for_slot"


def park(session: Session, job_id: str) -> bool:
    """Mark a queued job as waiting for a slot of its tenant, with no message in flight."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED, Job.stage.is_(None))
        .values(stage=WAITING_FOR_SLOT)
        .execution_options(synchronize_session=False)
    )
    parked = result.rowcount == 1  # type: ignore[attr-defined]
    if parked:
        add_event(session, job_id, "waiting", "the tenant runs its maximum of jobs; waiting for a free slot")
    return parked


def claim_lost_messages(session: Session, older_than: timedelta) -> list[str]:
    """Queued jobs whose message has been in flight longer than `older_than`: their message was
    probably lost (a broker restart). Returns the ids to send again, each claimed by refreshing its
    `queued_at`, so a concurrent reaper's identical UPDATE no longer matches them."""
    now = utcnow()
    cutoff = now - older_than
    stale = (Job.queued_at < cutoff) | (Job.queued_at.is_(None) & (Job.created_at < cutoff))
    result = session.execute(
        update(Job)
        .where(Job.status == JobStatus.QUEUED, Job.stage.is_(None), stale)
        .values(queued_at=now)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


def claim_parked_with_free_slots(session: Session, default_limit: int) -> list[str]:
    """Unpark the oldest parked jobs of every tenant that has free slots; returns the ids to send.

    A job with a message in flight holds a slot too, so one freed slot wakes one job. The tenant row
    is locked, as in the worker's capacity check, so claims and wake-ups of one tenant are serialised.
    """
    tenants = session.scalars(
        select(Job.tenant_id)
        .where(Job.status == JobStatus.QUEUED, Job.stage == WAITING_FOR_SLOT)
        .distinct()
        .order_by(Job.tenant_id)  # two reapers lock tenants in one order: no deadlock
    ).all()
    woken: list[str] = []
    for tenant_id in tenants:
        limit = session.scalar(
            select(Tenant.max_concurrent_jobs).where(Tenant.id == tenant_id).with_for_update()
        )
        holding = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                Job.tenant_id == tenant_id,
                Job.status.in_([s.value for s in ACTIVE_STATUSES])
                | ((Job.status == JobStatus.QUEUED) & Job.stage.is_(None)),
            )
        )
        free = (limit or default_limit) - int(holding or 0)
        if free <= 0:
            continue
        oldest = (
            select(Job.id)
            .where(Job.tenant_id == tenant_id, Job.status == JobStatus.QUEUED, Job.stage == WAITING_FOR_SLOT)
            .order_by(Job.created_at, Job.id)
            .limit(free)
        )
        result = session.execute(
            update(Job)
            .where(Job.id.in_(oldest), Job.status == JobStatus.QUEUED, Job.stage == WAITING_FOR_SLOT)
            .values(stage=None, queued_at=utcnow())
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
        woken += result.scalars()
    return woken
