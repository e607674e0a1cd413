"""The supervisor's checkpoint store: minimum interval and the storage quota (real Postgres)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from safetune.db import session_scope
from safetune.models import Checkpoint, Tenant
from safetune.repositories import job_runs
from safetune.repositories import jobs as jobs_repo
from worker.checkpoints import CheckpointStore
from worker.child_protocol import CheckpointEvent


def child_checkpoint(tmp_path: Path, step: int) -> CheckpointEvent:
    """A checkpoint folder as the training child writes it, and the event that announces it."""
    folder = tmp_path / f"step-{step}"
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text('{"r": 8}')
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"w" * 1000)
    (folder / "trainer_state.safetensors").write_bytes(b"s" * 1000)
    return CheckpointEvent(step=step, path=str(folder), train_loss=1.0, val_loss=None)


def stored_steps(job_id: str) -> list[int]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(Checkpoint.step).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
            )
        )


def test_checkpoints_sooner_than_the_minimum_interval_are_not_stored(
    worker_settings: Callable[..., None], make_job: Callable[..., str], tmp_path: Path
) -> None:
    worker_settings(checkpoint_min_interval_seconds="3600")
    job_id = make_job()
    store = CheckpointStore(job_id)
    for step in (1, 2, 3):
        store.store(child_checkpoint(tmp_path, step))
    assert stored_steps(job_id) == [1]

    worker_settings(checkpoint_min_interval_seconds="0", checkpoint_keep_last="2")
    other = make_job()
    store = CheckpointStore(other)
    for step in (1, 2, 3):
        store.store(child_checkpoint(tmp_path / "other", step))
    assert stored_steps(other) == [2, 3]


def test_a_tenant_at_its_storage_quota_gets_no_more_checkpoints(
    worker_settings: Callable[..., None], make_job: Callable[..., str], tmp_path: Path
) -> None:
    worker_settings(checkpoint_min_interval_seconds="0")
    job_id = make_job()
    with session_scope() as session:
        tenant_id = job_runs.load_job(session, job_id).tenant_id
        session.get_one(Tenant, tenant_id).storage_quota_bytes = 500  # the training file alone is less
    CheckpointStore(job_id).store(child_checkpoint(tmp_path, 1))
    assert stored_steps(job_id) == []
    with session_scope() as session:
        events, _ = jobs_repo.list_events(session, tenant_id, job_id, limit=100)
        skipped = [e.data for e in events if e.type == "checkpoint_skipped"]
    assert skipped and skipped[0] is not None and skipped[0]["reason"] == "storage_quota_exceeded"
