"""Bounded storage in the repositories: checkpoint retention, resume state dropped at the end, and
what a tenant's stored bytes add up to (real Postgres)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import select

from safetune.db import session_scope
from safetune.errors import ErrorCode
from safetune.models import Checkpoint
from safetune.repositories import job_runs, storage
from safetune.repositories import tenants as tenants_repo
from safetune.repositories.storage import CheckpointRetention
from tests.safetune.repositories.test_jobs import make_job as make_job_row


@pytest.fixture()
def make_job(database_url: str) -> Callable[[], str]:
    """make_job() -> the id of a committed queued job of a fresh tenant."""

    def _make() -> str:
        with session_scope() as session:
            tenant_id = tenants_repo.create_tenant(session, f"storage-{uuid.uuid4().hex[:10]}").id
            return make_job_row(session, tenant_id).id

    return _make


def save(job_id: str, step: int, val_loss: float | None, retention: CheckpointRetention) -> None:
    with session_scope() as session:
        job_runs.save_checkpoint(
            session,
            job_id,
            step=step,
            train_loss=1.0,
            val_loss=val_loss,
            adapter_zip=b"a" * 100,
            state_zip=b"s" * 1000,
            sha256=f"{step:064d}",
            retention=retention,
        )


def kept(job_id: str) -> list[tuple[int, int]]:
    """(step, bytes of resume state) of the job's checkpoints."""
    with session_scope() as session:
        rows = session.scalars(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
        )
        return [(c.step, len(c.state_zip)) for c in rows]


def test_a_job_keeps_its_newest_checkpoints_plus_the_best(make_job: Callable[[], str]) -> None:
    job_id = make_job()
    retention = CheckpointRetention(keep_last=2, keep_best=True)
    for step, val_loss in [(10, 2.0), (20, 1.2), (30, 1.5), (40, 1.6), (50, 1.7), (60, None)]:
        save(job_id, step, val_loss, retention)
    assert [step for step, _ in kept(job_id)] == [20, 50, 60]  # best (20) + the newest two


def test_without_keep_best_only_the_newest_stay(make_job: Callable[[], str]) -> None:
    job_id = make_job()
    for step, val_loss in [(1, 0.5), (2, 1.0), (3, 1.1)]:
        save(job_id, step, val_loss, CheckpointRetention(keep_last=1, keep_best=False))
    assert [step for step, _ in kept(job_id)] == [3]


def test_a_finished_job_drops_its_resume_state(make_job: Callable[[], str]) -> None:
    job_id = make_job()
    with session_scope() as session:
        assert job_runs.claim_job(session, job_id, "test-worker")
    save(job_id, 5, 1.0, CheckpointRetention(keep_last=3, keep_best=True))
    assert kept(job_id) == [(5, 1000)]
    with session_scope() as session:
        assert job_runs.mark_failed(session, job_id, ErrorCode.TRAINING_FAILED, "boom")
    assert kept(job_id) == [(5, 0)]  # never resumed again; the adapter stays downloadable


def test_tenant_storage_counts_files_adapters_and_checkpoints(make_job: Callable[[], str]) -> None:
    job_id = make_job()
    with session_scope() as session:
        tenant_id = job_runs.load_job(session, job_id).tenant_id
        before = storage.tenant_storage_bytes(session, tenant_id)
    assert before > 0  # the training file
    save(job_id, 1, None, CheckpointRetention(keep_last=3, keep_best=True))
    with session_scope() as session:
        assert storage.tenant_storage_bytes(session, tenant_id) == before + 1100
