"""safetune.repositories.jobs against real Postgres: scoping, pagination, events, cancel, quota."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session

from safetune.datasets import DatasetLimits, parse_dataset
from safetune.db import session_scope
from safetune.errors import ErrorCode, SafetuneError
from safetune.models import Job, JobStatus, Tenant
from safetune.repositories import files as files_repo
from safetune.repositories import jobs as jobs_repo
from safetune.repositories import tenants as tenants_repo
from safetune.schemas import JobSpec

DATA = b'{"prompt": "p", "completion": "c"}\n'
LIMITS = DatasetLimits(10_000, 10, 1000)


def make_job(session: Session, tenant_id: str, **spec_overrides: object) -> Job:
    """A queued job with its training file (the shape POST /jobs creates)."""
    stored = files_repo.create_file(
        session,
        tenant_id,
        purpose="training",
        filename="t.jsonl",
        dataset=parse_dataset(DATA, "training", LIMITS),
    )
    spec = JobSpec.model_validate({"base_model": "tiny-random-llama", **spec_overrides})
    return jobs_repo.create_job(session, tenant_id, spec, training_file_id=stored.id)


@pytest.fixture()
def tenant_id(database_url: str) -> str:
    with session_scope() as session:
        return tenants_repo.create_tenant(session, f"repo-{uuid.uuid4().hex[:10]}").id


def test_create_job_writes_job_and_queued_event(tenant_id: str) -> None:
    with session_scope() as session:
        job = make_job(session, tenant_id, guard="none", hyperparameters={"epochs": 3})
        job_id = job.id
    with session_scope() as session:
        loaded = jobs_repo.get_job(session, job_id)
        assert loaded is not None
        assert (loaded.status, loaded.guard, loaded.spec["hyperparameters"]["epochs"]) == (
            "queued",
            "none",
            3,
        )
        assert loaded.queued_at is not None
        events, has_more = jobs_repo.list_events(session, tenant_id, job_id)
        assert [e.type for e in events] == ["queued"] and not has_more


def test_scoping_hides_other_tenants(tenant_id: str) -> None:
    with session_scope() as session:
        other = tenants_repo.create_tenant(session, f"other-{uuid.uuid4().hex[:10]}").id
        job = make_job(session, tenant_id)
        assert jobs_repo.get_job_for_tenant(session, other, job.id) is None
        assert jobs_repo.list_events(session, other, job.id) == ([], False)
        assert files_repo.get_file_for_tenant(session, other, job.training_file_id) is None
        assert files_repo.get_file_content(session, tenant_id, job.training_file_id) == (
            b'{"messages":[{"role":"user","content":"p"},{"role":"assistant","content":"c"}]}\n'
        )


def test_pagination_with_equal_timestamps_is_stable(tenant_id: str) -> None:
    with session_scope() as session:
        jobs = [make_job(session, tenant_id) for _ in range(5)]
        same = jobs[0].created_at
        for job in jobs:
            job.created_at = same  # ties are broken by id, newest-first order stays total
        session.flush()
        expected = sorted((j.id for j in jobs), reverse=True)
        seen: list[str] = []
        after = None
        while True:
            page, has_more = jobs_repo.list_jobs(session, tenant_id, after=after, limit=2)
            seen += [j.id for j in page]
            if not has_more:
                break
            after = page[-1].id
        assert seen == expected


@pytest.mark.parametrize("status", ["running", "evaluating"])
def test_cancel_active_job_only_flags_it(tenant_id: str, status: str) -> None:
    with session_scope() as session:
        job = make_job(session, tenant_id)
        job.status = status
        session.flush()
        jobs_repo.request_cancel(session, job)
        jobs_repo.request_cancel(session, job)  # idempotent: one event only
        assert job.status == status and job.cancel_requested_at is not None
        events, _ = jobs_repo.list_events(session, tenant_id, job.id)
        assert [e.type for e in events] == ["queued", "cancel_requested"]


@pytest.mark.parametrize("status", [s.value for s in JobStatus if s.is_terminal()])
def test_cancel_terminal_is_refused(tenant_id: str, status: str) -> None:
    with session_scope() as session:
        job = make_job(session, tenant_id)
        job.status = status
        session.flush()
        with pytest.raises(SafetuneError) as info:
            jobs_repo.request_cancel(session, job)
        assert info.value.code is ErrorCode.JOB_NOT_CANCELLABLE


def test_quota_helpers(tenant_id: str) -> None:
    with session_scope() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        jobs = [make_job(session, tenant_id) for _ in range(2)]
        with pytest.raises(SafetuneError) as info:
            jobs_repo.check_queue_quota(session, tenant, max_queued=2)
        assert info.value.code is ErrorCode.QUOTA_EXCEEDED
        jobs_repo.check_queue_quota(session, tenant, max_queued=3)
        assert jobs_repo.tenant_can_start(session, tenant_id, max_concurrent=1)
        jobs[0].status = "running"
        session.flush()
        assert not jobs_repo.tenant_can_start(session, tenant_id, max_concurrent=1)


def test_events_after_and_limit(tenant_id: str) -> None:
    add: Callable[..., object] = jobs_repo.add_event
    with session_scope() as session:
        job = make_job(session, tenant_id)
        for i in range(4):
            add(session, job.id, "step", f"step {i}", data={"step": i})
        first, more = jobs_repo.list_events(session, tenant_id, job.id, limit=2)
        assert more and [e.type for e in first] == ["queued", "step"]
        rest, more = jobs_repo.list_events(session, tenant_id, job.id, after=first[-1].id)
        assert not more and [e.data for e in rest] == [{"step": 1}, {"step": 2}, {"step": 3}]


def test_queue_quota_holds_under_concurrent_submissions(database_url: str) -> None:
    with session_scope() as session:
        tenant_id = tenants_repo.create_tenant(session, f"race-{uuid.uuid4().hex[:10]}", max_queued_jobs=1).id
    first_checked = threading.Event()
    outcomes: dict[str, str] = {}

    def submit(name: str, hold: float) -> None:
        try:
            with session_scope() as session:
                tenant = session.get(Tenant, tenant_id)
                assert tenant is not None
                jobs_repo.check_queue_quota(session, tenant, max_queued=20)
                first_checked.set()
                make_job(session, tenant_id)
                time.sleep(hold)  # commit late: the other submission must wait for us, not race us
            outcomes[name] = "created"
        except SafetuneError as exc:
            outcomes[name] = exc.code.code

    first = threading.Thread(target=submit, args=("first", 0.5))
    first.start()
    assert first_checked.wait(5)
    second = threading.Thread(target=submit, args=("second", 0.0))
    second.start()
    first.join(10)
    second.join(10)
    assert outcomes == {"first": "created", "second": "quota_exceeded"}
