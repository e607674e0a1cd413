"""worker.reaper.reap() against real Postgres and the real Redis queue."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

from safetune.db import session_scope
from safetune.errors import ErrorCode
from safetune.models import Job, utcnow
from safetune.repositories import job_runs
from safetune.repositories import jobs as jobs_repo
from safetune.repositories import tenants as tenants_repo
from tests.worker.conftest import ago, set_columns
from worker import reaper
from worker.pipeline import run_job


def load(job_id: str) -> Job:
    """The job row, detached so its loaded attributes stay readable after the session closes."""
    with session_scope() as session:
        job = job_runs.load_job(session, job_id)
        session.expunge(job)
        return job


def events(job_id: str) -> list[tuple[str, str]]:
    with session_scope() as session:
        job = job_runs.load_job(session, job_id)
        rows, _ = jobs_repo.list_events(session, job.tenant_id, job_id, limit=100)
        return [(e.type, e.message) for e in rows]


def claim_and_go_silent(job_id: str, worker: str) -> None:
    with session_scope() as session:
        assert job_runs.claim_job(session, job_id, worker)
    set_columns(job_id, heartbeat_at=ago(3600))


def reap_twice_at_once() -> None:
    """Two reapers (two workers) ticking at the same moment."""
    barrier = Barrier(2)

    def tick(_: int) -> dict[str, int]:
        barrier.wait()
        return reaper.reap()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(tick, range(2)))


def test_stale_running_job_is_requeued_then_fails_worker_lost(
    make_job: Callable[..., str], worker_settings: Callable[..., None], sent_job_ids: Callable[[], list[str]]
) -> None:
    worker_settings(stale_after_seconds="60", max_attempts="2", requeue_queued_after_seconds="86400")
    job_id = make_job()
    claim_and_go_silent(job_id, "host:1")

    assert reaper.reap()["requeued"] >= 1
    job = load(job_id)
    assert (job.status, job.worker_id) == ("queued", None)
    requeued = [m for t, m in events(job_id) if t == "requeued"]
    assert len(requeued) == 1
    assert "host:1 stopped heartbeating" in requeued[0] and "attempt 1/2" in requeued[0]
    assert job_id in sent_job_ids()  # re-sent to the broker after the commit

    claim_and_go_silent(job_id, "host:2")  # the second (last) attempt dies too
    assert reaper.reap()["failed"] >= 1
    job = load(job_id)
    assert (job.status, job.error_code, job.attempt) == ("failed", "worker_lost", 2)
    assert "after 2 attempts" in (job.error_message or "")
    assert [t for t, _ in events(job_id)].count("failed") == 1


def test_fresh_heartbeat_is_left_alone(
    make_job: Callable[..., str], worker_settings: Callable[..., None]
) -> None:
    worker_settings(stale_after_seconds="60", requeue_queued_after_seconds="86400")
    job_id = make_job()
    with session_scope() as session:
        assert job_runs.claim_job(session, job_id, "host:1")
    reaper.reap()
    assert load(job_id).status == "running"


def test_cancel_requested_stale_job_becomes_cancelled(
    make_job: Callable[..., str], worker_settings: Callable[..., None]
) -> None:
    worker_settings(stale_after_seconds="60", requeue_queued_after_seconds="86400")
    job_id = make_job()
    claim_and_go_silent(job_id, "host:1")
    set_columns(job_id, cancel_requested_at=utcnow())
    reaper.reap()
    job = load(job_id)
    assert job.status == "cancelled" and job.finished_at is not None
    assert "requeued" not in [t for t, _ in events(job_id)]


def test_queued_job_older_than_threshold_is_resent(
    make_job: Callable[..., str], worker_settings: Callable[..., None], sent_job_ids: Callable[[], list[str]]
) -> None:
    worker_settings(requeue_queued_after_seconds="60", stale_after_seconds="86400")
    lost = make_job(queued_at=ago(600))
    recent = make_job()
    before = load(recent).queued_at

    assert reaper.reap()["resent"] >= 1
    touched = load(lost).queued_at
    assert touched is not None and touched > ago(60)  # so the next tick does not re-send it again
    assert load(recent).queued_at == before
    sent = sent_job_ids()
    assert lost in sent and recent not in sent

    reaper.reap()  # within the threshold again: no second copy
    assert sent_job_ids().count(lost) == 1
    # The re-send is visible in the job's log, so a user can see why the job waited.
    resent = [m for t, m in events(lost) if t == "resent"]
    assert len(resent) == 1 and "no worker claimed" in resent[0]
    assert "resent" not in [t for t, _ in events(recent)]


def test_two_reapers_at_once_requeue_a_job_once(
    make_job: Callable[..., str], worker_settings: Callable[..., None]
) -> None:
    worker_settings(stale_after_seconds="60", max_attempts="3", requeue_queued_after_seconds="86400")
    job_id = make_job()
    claim_and_go_silent(job_id, "host:1")
    reap_twice_at_once()
    assert load(job_id).status == "queued"
    assert [t for t, _ in events(job_id)].count("requeued") == 1


def test_two_reapers_at_once_resend_a_lost_job_once(
    make_job: Callable[..., str], worker_settings: Callable[..., None], sent_job_ids: Callable[[], list[str]]
) -> None:
    worker_settings(requeue_queued_after_seconds="60", stale_after_seconds="86400")
    lost = [make_job(queued_at=ago(600)) for _ in range(3)]
    reap_twice_at_once()
    sent = sent_job_ids()
    assert [sent.count(job_id) for job_id in lost] == [1, 1, 1]  # the UPDATE ... RETURNING claim


def busy_tenant_with_a_queued_job(make_job: Callable[..., str]) -> tuple[str, str]:
    """(running_id, queued_id): a tenant allowed one job at a time, running one with another queued."""
    with session_scope() as session:
        tenant = tenants_repo.create_tenant(session, f"busy-{uuid.uuid4().hex[:10]}", max_concurrent_jobs=1)
    running = make_job(tenant_id=tenant.id)
    with session_scope() as session:
        assert job_runs.claim_job(session, running, "elsewhere:1")
    return running, make_job(tenant_id=tenant.id)


def test_busy_tenant_job_is_parked_without_a_message_and_woken_once_when_a_slot_frees(
    make_job: Callable[..., str], worker_settings: Callable[..., None], sent_job_ids: Callable[[], list[str]]
) -> None:
    worker_settings(requeue_queued_after_seconds="1", stale_after_seconds="86400")
    running, queued = busy_tenant_with_a_queued_job(make_job)

    run_job(queued)  # delivered while the tenant's only slot is taken
    job = load(queued)
    assert (job.status, job.stage) == ("queued", "waiting_for_slot")
    assert "waiting" in [t for t, _ in events(queued)]
    assert sent_job_ids().count(queued) == 0  # not sent back to the broker

    time.sleep(1.5)  # older than the lost-message threshold: a parked job has no message to lose
    reaper.reap()
    assert sent_job_ids().count(queued) == 0 and load(queued).stage == "waiting_for_slot"

    with session_scope() as session:
        assert job_runs.mark_failed(session, running, ErrorCode.TRAINING_FAILED, "done with the slot")
    assert reaper.reap()["woken"] >= 1
    assert sent_job_ids().count(queued) == 1
    assert (load(queued).status, load(queued).stage) == ("queued", None)
    reaper.reap()  # woken = in flight again: it holds the free slot, no second message
    assert sent_job_ids().count(queued) == 1
