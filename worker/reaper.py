"""Reap jobs whose worker died, re-send queued jobs the broker lost, wake jobs parked for a free slot.

Safe to run anywhere, often.

Postgres is the source of truth: a `running` job whose heartbeat is older than the cut-off has lost
its worker. It goes back to the queue (resuming from its last checkpoint) until it has used
`max_attempts`, then fails with `worker_lost`. Every transition is a conditional UPDATE and every
re-send an `UPDATE ... RETURNING` claim (safetune.repositories.job_queue), so several reapers (one per
worker) cannot double-handle or double-send a job.
"""

from __future__ import annotations

import functools
import logging
import threading
from datetime import timedelta

from sqlalchemy.orm import Session

from safetune.config import get_settings
from safetune.db import on_commit, session_scope
from safetune.errors import ErrorCode
from safetune.queue import enqueue_training
from safetune.repositories import job_queue, job_runs, jobs

log = logging.getLogger("safetune.reaper")


def reap() -> dict[str, int]:
    settings = get_settings()
    requeued: list[str] = []
    failed = 0
    with session_scope() as session:
        for job in job_runs.stale_active_jobs(session, timedelta(seconds=settings.stale_after_seconds)):
            silent_for = "never" if job.heartbeat_at is None else f"since {job.heartbeat_at.isoformat()}"
            if job.cancel_requested_at is not None:
                job_runs.mark_cancelled(session, job.id)
            elif job.attempt < settings.max_attempts:
                reason = (
                    f"worker {job.worker_id} stopped heartbeating ({silent_for}); "
                    f"attempt {job.attempt}/{settings.max_attempts} lost, resuming from the last checkpoint"
                )
                if job_runs.requeue(session, job.id, reason):
                    requeued.append(job.id)
            else:
                failed += job_runs.mark_failed(
                    session,
                    job.id,
                    ErrorCode.WORKER_LOST,
                    f"worker {job.worker_id} stopped heartbeating ({silent_for}) "
                    f"after {job.attempt} attempts",
                )
        _send_after_commit(session, requeued)
    with session_scope() as session:
        lost = job_queue.claim_lost_messages(
            session, timedelta(seconds=settings.requeue_queued_after_seconds)
        )
        waited = settings.requeue_queued_after_seconds
        reason = f"no worker claimed the job within {waited:.0f} s; re-sent to the queue"
        for job_id in lost:
            jobs.add_event(session, job_id, "resent", reason, level="warning")
        woken = job_queue.claim_parked_with_free_slots(session, settings.max_concurrent_jobs_per_tenant)
        _send_after_commit(session, [*lost, *woken])
    if requeued or lost or failed:
        log.warning("reaper: requeued %d, re-sent %d, failed %d", len(requeued), len(lost), failed)
    return {"requeued": len(requeued), "resent": len(lost), "woken": len(woken), "failed": failed}


def _send_after_commit(session: Session, job_ids: list[str]) -> None:
    # Like the API: the worker's claim needs the committed row, and a rolled-back claim sends nothing.
    for job_id in job_ids:
        on_commit(session, functools.partial(enqueue_training, job_id))


def start_background_reaper(interval_seconds: float, stop: threading.Event | None = None) -> threading.Thread:
    """Run reap() every interval in a daemon thread (each worker reaps; the claims keep it safe)."""
    stop = stop or threading.Event()

    def loop() -> None:
        while not stop.wait(interval_seconds):
            try:
                reap()
            except Exception:  # a DB blip must not kill the reaper; the next tick retries
                log.exception("reaper tick failed")

    thread = threading.Thread(target=loop, name="safetune-reaper", daemon=True)
    thread.start()
    return thread
