"""Service-wide (not tenant-scoped) read queries for the Prometheus scrape: operators, not users."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from safetune.models import ACTIVE_STATUSES, Job, JobEvent, JobStatus


@dataclass(frozen=True)
class RunningJobStats:
    job_id: str
    tokens_per_second: float | None
    seconds_per_step: float | None


def job_counts_by_status(session: Session) -> dict[str, int]:
    """Every status, zero included, so a gauge series never disappears between scrapes."""
    counts = {status.value: 0 for status in JobStatus}
    for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
        counts[status] = int(count)
    return counts


def running_job_stats(session: Session, limit: int = 200) -> list[RunningJobStats]:
    """Throughput of active jobs: tokens/s from the job row, s/step from the latest metrics event."""
    jobs = session.execute(
        select(Job.id, Job.tokens_per_second)
        .where(Job.status.in_([s.value for s in ACTIVE_STATUSES]))
        .order_by(Job.started_at.desc())
        .limit(limit)
    ).all()
    stats = []
    for job_id, tokens_per_second in jobs:
        data = session.scalar(
            select(JobEvent.data)
            .where(JobEvent.job_id == job_id, JobEvent.type == "metrics")
            .order_by(JobEvent.id.desc())
            .limit(1)
        )
        seconds_per_step = None
        if data and data.get("step") and data.get("elapsed_seconds") is not None:
            seconds_per_step = float(data["elapsed_seconds"]) / int(data["step"])
        stats.append(RunningJobStats(job_id, tokens_per_second, seconds_per_step))
    return stats
