"""run_job's final transaction: what a finished child's outcome becomes on the job row."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from safetune.db import session_scope
from safetune.errors import ErrorCode
from safetune.models import Adapter, Job
from safetune.repositories import job_runs
from worker import pipeline
from worker.child_protocol import DoneEvent, ErrorEvent
from worker.supervisor import ChildOutcome


@pytest.fixture()
def running_job(make_job: Callable[..., str], worker_settings: Callable[..., None]) -> str:
    job_id = make_job()
    with session_scope() as session:
        assert job_runs.claim_job(session, job_id, "test-worker")
    return job_id


def load(job_id: str) -> tuple[Job, bool]:
    """The job row and whether an adapter was stored for it."""
    with session_scope() as session:
        job = job_runs.load_job(session, job_id)
        session.expunge(job)
        return job, session.get(Adapter, job_id) is not None


def finished_child(tmp_path: Path, report: dict[str, Any]) -> ChildOutcome:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    (tmp_path / "report.json").write_text(json.dumps(report))
    return ChildOutcome(done=DoneEvent(adapter_dir=str(adapter), report_path=str(tmp_path / "report.json")))


@pytest.mark.parametrize("verdict", [None, {}, {"status": None}, {"status": "maybe"}])
def test_a_report_without_a_valid_verdict_fails_the_job_instead_of_reading_warn(
    running_job: str, tmp_path: Path, verdict: Any
) -> None:
    report: dict[str, Any] = {"summary": {}} if verdict is None else {"summary": {}, "verdict": verdict}
    pipeline._record_outcome(running_job, tmp_path, finished_child(tmp_path, report))
    job, stored = load(running_job)
    assert (job.status, job.error_code) == ("failed", "evaluation_failed")
    assert "no valid verdict" in (job.error_message or "")
    assert not stored  # no half result


def test_a_valid_verdict_is_stored(running_job: str, tmp_path: Path) -> None:
    report = {"summary": {"base_harmful_score": 0.1}, "verdict": {"status": "fail", "reasons": ["x"]}}
    pipeline._record_outcome(running_job, tmp_path, finished_child(tmp_path, report))
    job, stored = load(running_job)
    assert job.status == "succeeded" and stored


@pytest.mark.parametrize(
    ("child_code", "stored_code", "message"),
    [
        ("base_model_unavailable", "base_model_unavailable", "not in the model cache"),
        ("dataset_harmful", "dataset_harmful", "not in the model cache"),
        ("oom_somewhere", "training_failed", "not in the model cache (unknown error code 'oom_somewhere')"),
        ("", "training_failed", "not in the model cache (unknown error code '')"),
    ],
)
def test_every_stored_failure_code_is_an_error_code_member(
    running_job: str, tmp_path: Path, child_code: str, stored_code: str, message: str
) -> None:
    outcome = ChildOutcome(error=ErrorEvent(code=child_code, message="not in the model cache"))
    pipeline._record_outcome(running_job, tmp_path, outcome)
    job, _ = load(running_job)
    assert (job.status, job.error_code, job.error_message) == ("failed", stored_code, message)
    assert ErrorCode.for_job_failure(job.error_code) is not None
