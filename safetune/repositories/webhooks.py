"""The webhook outbox and its delivery log. Only add/flush; the caller owns the transaction.

An event row is added in the transaction of the status change it announces; dispatchers claim due
rows with one conditional UPDATE each (so two of them never send one attempt twice) and record
every attempt in `webhook_deliveries`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from safetune.models import Job, Tenant, WebhookDelivery, WebhookOutboxEvent, utcnow


@dataclass(frozen=True)
class DueEvent:
    """What one delivery attempt needs, read in the claiming transaction."""

    id: str
    job_id: str
    type: str
    created_at: datetime
    attempt: int  # 1 for the first try
    url: str
    secret: str


def add_event(session: Session, job_id: str, event_type: str) -> str | None:
    """Queue ``event_type`` for the job's webhook_url; None (nothing queued) when it has none."""
    if not session.scalar(select(Job.webhook_url).where(Job.id == job_id)):
        return None
    event_id = f"evt_{uuid.uuid4().hex}"
    now = utcnow()
    session.add(
        WebhookOutboxEvent(id=event_id, job_id=job_id, type=event_type, created_at=now, next_attempt_at=now)
    )
    session.flush()
    return event_id


def claim_due(session: Session, *, lease: timedelta, limit: int = 20) -> list[DueEvent]:
    """Claim up to ``limit`` due events for one attempt each: the attempt count goes up and the event
    is not due again before ``lease`` has passed (then a crashed attempt is simply retried)."""
    now = utcnow()
    due = (
        select(WebhookOutboxEvent.id)
        .where(WebhookOutboxEvent.next_attempt_at <= now)
        .order_by(WebhookOutboxEvent.next_attempt_at)
        .limit(limit)
    )
    claimed = (
        session.execute(
            update(WebhookOutboxEvent)
            # Re-checked per row under its lock: a concurrent dispatcher's claim makes it no longer due.
            .where(WebhookOutboxEvent.id.in_(due), WebhookOutboxEvent.next_attempt_at <= now)
            .values(next_attempt_at=now + lease, attempts=WebhookOutboxEvent.attempts + 1)
            .returning(WebhookOutboxEvent.id)
            .execution_options(synchronize_session=False)
        )
        .scalars()
        .all()
    )
    if not claimed:
        return []
    rows = session.execute(
        select(WebhookOutboxEvent, Job.webhook_url, Tenant.webhook_secret)
        .join(Job, Job.id == WebhookOutboxEvent.job_id)
        .join(Tenant, Tenant.id == Job.tenant_id)
        .where(WebhookOutboxEvent.id.in_(claimed))
        .order_by(WebhookOutboxEvent.created_at)
    ).all()
    return [
        DueEvent(
            id=event.id,
            job_id=event.job_id,
            type=event.type,
            created_at=event.created_at,
            attempt=event.attempts,
            url=url or "",
            secret=secret,
        )
        for event, url, secret in rows
    ]


def record_attempt(
    session: Session,
    event: DueEvent,
    *,
    status_code: int | None,
    error: str | None,
    retry_at: datetime | None,
) -> None:
    """Log the attempt; a success (``error`` None) finishes the event, a failure schedules the next
    attempt at ``retry_at`` or, when that is None, gives the event up. An event whose job was deleted
    (DELETE /jobs/{id}) during the attempt went with it: nothing is recorded then."""
    delivered = error is None
    still_there = session.execute(
        update(WebhookOutboxEvent)
        .where(WebhookOutboxEvent.id == event.id)
        .values(
            next_attempt_at=None if delivered else retry_at,
            delivered_at=utcnow() if delivered else None,
            last_error=error,
        )
        .returning(WebhookOutboxEvent.id)
        .execution_options(synchronize_session=False)
    ).first()
    if still_there is None:
        return
    session.add(
        WebhookDelivery(
            job_id=event.job_id,
            event_id=event.id,
            event_type=event.type,
            attempt=event.attempt,
            status_code=status_code,
            error=error,
            delivered=delivered,
        )
    )
    session.flush()
