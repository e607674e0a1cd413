"""Helpers for API tests: submit a job, count a tenant's rows."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from safetune.db import session_scope
from safetune.models import Job, JobEvent, StoredFile

TINY_MODEL = "tiny-random-llama"


def chat_jsonl(n: int = 3) -> bytes:
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": f"answer {i}"},
            ]
        }
        for i in range(n)
    ]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def submit_job(
    client: TestClient,
    headers: dict[str, str],
    *,
    dataset: bytes | None = None,
    spec: dict[str, Any] | str | None = None,
    extra_headers: dict[str, str] | None = None,
) -> Any:
    spec_value = spec if isinstance(spec, str) else json.dumps(spec or {"base_model": TINY_MODEL})
    return client.post(
        "/jobs",
        headers={**headers, **(extra_headers or {})},
        files={"dataset": ("train.jsonl", chat_jsonl() if dataset is None else dataset, "application/jsonl")},
        data={"spec": spec_value},
    )


def row_counts(tenant_id: str) -> dict[str, int]:
    """How many files, jobs and job events the tenant owns (validation must leave all at zero)."""
    with session_scope() as session:
        files = session.scalar(
            select(func.count()).select_from(StoredFile).where(StoredFile.tenant_id == tenant_id)
        )
        jobs = session.scalar(select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id))
        events = session.scalar(
            select(func.count())
            .select_from(JobEvent)
            .join(Job, Job.id == JobEvent.job_id)
            .where(Job.tenant_id == tenant_id)
        )
    return {"files": files or 0, "jobs": jobs or 0, "job_events": events or 0}


def set_status(job_id: str, status: str) -> None:
    """Move a job as the worker would (tests only)."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status = status


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert {"code", "message", "param", "line"} <= set(error)
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return error
