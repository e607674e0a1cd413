"""claim_job against real Postgres: the conditional UPDATE that makes duplicate deliveries harmless."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

from safetune.db import session_scope
from safetune.errors import ErrorCode
from safetune.models import utcnow
from safetune.repositories import job_runs
from safetune.repositories import jobs as jobs_repo
from tests.worker.conftest import set_columns


def event_types(job_id: str) -> list[str]:
    with session_scope() as session:
        job = job_runs.load_job(session, job_id)
        events, _ = jobs_repo.list_events(session, job.tenant_id, job_id, limit=100)
        return [e.type for e in events]


def claim(job_id: str, worker: str) -> bool:
    with session_scope() as session:
        return job_runs.claim_job(session, job_id, worker)


def test_second_claim_returns_false_and_changes_nothing(make_job: Callable[..., str]) -> None:
    job_id = make_job()
    assert claim(job_id, "w1") is True
    assert claim(job_id, "w2") is False
    with session_scope() as session:
        job = job_runs.load_job(session, job_id)
        assert (job.status, job.attempt, job.worker_id) == ("running", 1, "w1")
    assert event_types(job_id).count("started") == 1


def test_concurrent_claims_have_exactly_one_winner(make_job: Callable[..., str]) -> None:
    job_id = make_job()
    contenders = 8
    barrier = Barrier(contenders)

    def race(i: int) -> bool:
        barrier.wait()  # all UPDATEs hit Postgres together
        return claim(job_id, f"w{i}")

    with ThreadPoolExecutor(contenders) as pool:
        results = list(pool.map(race, range(contenders)))
    assert results.count(True) == 1
    with session_scope() as session:
        assert job_runs.load_job(session, job_id).attempt == 1
    assert event_types(job_id).count("started") == 1


def test_cancel_requested_or_finished_jobs_are_not_claimable(make_job: Callable[..., str]) -> None:
    cancelled = make_job(cancel_requested_at=utcnow())
    assert claim(cancelled, "w1") is False
    finished = make_job()
    assert claim(finished, "w1")
    with session_scope() as session:
        assert job_runs.mark_failed(session, finished, ErrorCode.TRAINING_FAILED, "boom")
    set_columns(finished, cancel_requested_at=None)
    assert claim(finished, "w2") is False  # a redelivered message for a finished job does nothing


def test_requeued_job_is_claimed_again_with_the_next_attempt(make_job: Callable[..., str]) -> None:
    job_id = make_job()
    assert claim(job_id, "w1")
    with session_scope() as session:
        assert job_runs.requeue(session, job_id, "worker shut down")
        assert not job_runs.requeue(session, job_id, "twice")  # no longer active: no second event
    assert claim(job_id, "w2")
    with session_scope() as session:
        assert job_runs.load_job(session, job_id).attempt == 2
    assert event_types(job_id).count("requeued") == 1


def test_tenant_at_its_concurrency_limit_waits_in_the_queue(
    make_job: Callable[..., str],
    worker_settings: Callable[..., None],
    sent_job_ids: Callable[[], list[str]],
) -> None:
    from safetune.models import Job, Tenant
    from worker.pipeline import run_job

    worker_settings()
    first = make_job()
    with session_scope() as session:
        tenant_id = session.get(Job, first).tenant_id
        session.get(Tenant, tenant_id).max_concurrent_jobs = 1
    second = make_job()
    set_columns(second, tenant_id=tenant_id)
    assert claim(first, "w1")

    run_job(second)  # returns at once: the tenant's only slot is taken

    with session_scope() as session:
        job = job_runs.load_job(session, second)
        assert (job.status, job.stage) == ("queued", "waiting_for_slot")
    assert "started" not in event_types(second)
    # Parked, not re-sent: a re-send per busy delivery multiplied the tenant's messages (issue 12).
    # The reaper wakes it when a slot frees (test_reaper).
    assert second not in sent_job_ids()
