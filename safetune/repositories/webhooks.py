"""Webhook delivery records and the job facts a terminal-event payload needs. Only add/flush."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from safetune.models import Job, SafetyReport, Tenant, WebhookDelivery


@dataclass(frozen=True)
class TerminalJob:
    """What a webhook for one finished job needs, read in one short transaction."""

    job_id: str
    status: str
    webhook_url: str
    secret: str
    error_code: str | None
    error_message: str | None
    verdict: str | None


def webhook_url(session: Session, job_id: str) -> str | None:
    return session.scalar(select(Job.webhook_url).where(Job.id == job_id))


def load_terminal_job(session: Session, job_id: str) -> TerminalJob | None:
    """None when the job is gone or has no webhook_url."""
    row = session.execute(
        select(Job, Tenant.webhook_secret, SafetyReport.verdict)
        .join(Tenant, Tenant.id == Job.tenant_id)
        .outerjoin(SafetyReport, SafetyReport.job_id == Job.id)
        .where(Job.id == job_id)
    ).first()
    if row is None or not row[0].webhook_url:
        return None
    job: Job = row[0]
    return TerminalJob(
        job_id=job.id,
        status=job.status,
        webhook_url=job.webhook_url or "",
        secret=row[1],
        error_code=job.error_code,
        error_message=job.error_message,
        verdict=row[2],
    )


def record_delivery(
    session: Session,
    job_id: str,
    event_type: str,
    *,
    attempt: int,
    status_code: int | None,
    error: str | None,
    delivered: bool,
) -> None:
    session.add(
        WebhookDelivery(
            job_id=job_id,
            event_type=event_type,
            attempt=attempt,
            status_code=status_code,
            error=error,
            delivered=delivered,
        )
    )
    session.flush()


def list_deliveries(session: Session, job_id: str) -> list[WebhookDelivery]:
    stmt = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.id)
    return list(session.scalars(stmt))
