"""The training child's report, from a real run of the tiny model (run_job in-process, real child)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from safetune.db import reset_engine, session_scope
from safetune.repositories import artifacts, job_runs
from worker.pipeline import run_job


def test_the_utility_check_reads_the_losses_the_child_reports(
    make_job: Callable[..., str],
    worker_settings: Callable[..., None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The child wrote loss_before/after while sap_core.report reads val_loss_before/after, so the
    val-loss warning could never fire (issue 12 §9). With a limit of 0 it fires exactly when the loss
    rose."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    worker_settings(training_device="cpu", work_dir=str(tmp_path / "jobs"))
    reset_engine()
    evaluation = {"max_prompts": 1, "max_new_tokens": 2, "thresholds": {"max_val_loss_increase": 0.0}}
    job_id = make_job(
        spec={
            "hyperparameters": {"max_steps": 2, "batch_size": 1, "max_seq_len": 64},
            "evaluation": evaluation,
        }
    )
    run_job(job_id)

    with session_scope() as session:
        job = job_runs.load_job(session, job_id)
        assert job.status == "succeeded", job.error_message
        report = artifacts.get_report_for_tenant(session, job.tenant_id, job_id)
        assert report is not None
        body = report.report
    before, after = body["utility"]["val_loss_before"], body["utility"]["val_loss_after"]
    assert before > 0 and after > 0
    assert body["thresholds"]["max_val_loss_increase"] == 0.0
    warned = any("val loss rose" in reason for reason in body["verdict"]["reasons"])
    assert warned == (after > before)
    assert body["summary"]["loss_before"] == before and body["summary"]["loss_after"] == after
