"""Worker-side fixtures: jobs created the way POST /jobs creates them, settings for the reaper, and a
look into the real Redis queue (what `enqueue_training` actually sent)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import update

from safetune import queue
from safetune.config import get_settings
from safetune.datasets import DatasetLimits, parse_dataset
from safetune.db import reset_engine, session_scope
from safetune.models import Job, utcnow
from safetune.queue import TRAINING_QUEUE
from safetune.repositories import files as files_repo
from safetune.repositories import jobs as jobs_repo
from safetune.repositories import tenants as tenants_repo
from safetune.schemas import JobSpec

DATA = b'{"prompt": "p", "completion": "c"}\n'
FAULT_SUFFIX = "supervised-fault"  # the job suffix the child's test-only fault injection hits


@pytest.fixture()
def worker_settings(
    database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., None]]:
    """configure(**SAFETUNE_* overrides): the broker is the per-run Redis db, never the in-process
    runner (which would start training inside the test)."""

    def configure(**overrides: str) -> None:
        monkeypatch.setenv("SAFETUNE_BROKER_URL", redis_url)
        for key, value in overrides.items():
            monkeypatch.setenv(f"SAFETUNE_{key.upper()}", value)
        get_settings.cache_clear()

    configure()
    yield configure
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture()
def make_job(database_url: str) -> Callable[..., str]:
    """make_job(spec=None, tenant_id=None, **column_overrides) -> job id: a committed queued job of a
    fresh tenant, or of `tenant_id` (`spec`: JobSpec fields on top of the tiny model without a guard)."""

    def _make(spec: dict[str, object] | None = None, tenant_id: str | None = None, **columns: object) -> str:
        with session_scope() as session:
            if tenant_id is None:
                tenant_id = tenants_repo.create_tenant(session, f"worker-{uuid.uuid4().hex[:10]}").id
            stored = files_repo.create_file(
                session,
                tenant_id,
                purpose="training",
                filename="t.jsonl",
                dataset=parse_dataset(DATA, "training", DatasetLimits(10_000, 10, 1000)),
            )
            fields = {"base_model": "tiny-random-llama", "guard": "none", **(spec or {})}
            job_spec = JobSpec.model_validate(fields)
            job_id = jobs_repo.create_job(session, tenant_id, job_spec, training_file_id=stored.id).id
        if columns:
            set_columns(job_id, **columns)
        return job_id

    return _make


def set_columns(job_id: str, **columns: object) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**columns))


def ago(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)


@pytest.fixture()
def sent_job_ids(redis_url: str) -> Iterator[Callable[[], list[str]]]:
    """sent_job_ids() -> the job ids of the train messages now waiting in the Redis queue."""
    client = redis.Redis.from_url(redis_url)

    def _sent() -> list[str]:
        ids = []
        for raw in client.lrange(TRAINING_QUEUE, 0, -1):
            headers = json.loads(raw).get("headers", {})
            if headers.get("task") == queue.TRAIN_TASK:
                ids.append(str(headers.get("argsrepr", "")).strip("[]()' ,\""))
        return ids

    yield _sent
    client.close()


@pytest.fixture()
def supervised(
    worker_settings: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., None]]:
    """supervised(fault=None, **settings): settings for an in-process run_job with a faulty child."""

    def configure(fault: str | None = None, **settings: str) -> None:
        if fault:
            monkeypatch.setenv("SAFETUNE_FAULT_SUFFIX", FAULT_SUFFIX)
            monkeypatch.setenv("SAFETUNE_FAULT_KIND", fault)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        worker_settings(training_device="cpu", work_dir=str(tmp_path / "jobs"), **settings)
        reset_engine()

    yield configure
    reset_engine()
