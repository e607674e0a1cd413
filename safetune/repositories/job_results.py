"""What a succeeded job leaves besides its adapter and report: per-step metrics, the result file (a
CSV like OpenAI's result_files), trained_tokens and a final checkpoint. Only add/flush here."""

from __future__ import annotations

import csv
import hashlib
import io
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from safetune.models import Checkpoint, Job, JobStepMetric, StoredFile
from safetune.schemas import RESULT_FILE_PURPOSE

METRIC_FIELDS = ("train_loss", "valid_loss", "learning_rate", "tokens", "elapsed_seconds")
CSV_COLUMNS = ("step", *METRIC_FIELDS)


def record_step_metrics(session: Session, job_id: str, rows: dict[int, dict[str, Any]]) -> None:
    """Merge ``step -> {field: value}`` into the job's metrics: a field given here replaces the
    stored one, others are kept (a step's validation loss and its training loss arrive apart, and
    a resumed attempt reports the steps after its checkpoint again)."""
    if not rows:
        return
    existing = {
        m.step: m
        for m in session.scalars(
            select(JobStepMetric).where(JobStepMetric.job_id == job_id, JobStepMetric.step.in_(list(rows)))
        )
    }
    for step, values in rows.items():
        known = {k: v for k, v in values.items() if k in METRIC_FIELDS}
        metric = existing.get(step)
        if metric is None:
            session.add(JobStepMetric(job_id=job_id, step=step, **known))
        else:
            for key, value in known.items():
                setattr(metric, key, value)
    session.flush()


def step_metrics(session: Session, job_id: str) -> list[JobStepMetric]:
    return list(
        session.scalars(
            select(JobStepMetric).where(JobStepMetric.job_id == job_id).order_by(JobStepMetric.step)
        )
    )


def metrics_csv(metrics: list[JobStepMetric]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for m in metrics:
        writer.writerow([m.step, *("" if getattr(m, f) is None else getattr(m, f) for f in METRIC_FIELDS)])
    return out.getvalue().encode()


def store_results(session: Session, job_id: str, *, adapter_zip: bytes, adapter_sha256: str) -> None:
    """On success: the metrics CSV as the job's result file, trained_tokens, and a checkpoint at the
    final step holding the final adapter unless checkpoint_every already saved one there (OpenAI
    lists at least the final checkpoint of every job)."""
    job = session.execute(select(Job).where(Job.id == job_id)).scalar_one()
    metrics = step_metrics(session, job_id)
    content = metrics_csv(metrics)
    result = StoredFile(
        tenant_id=job.tenant_id,
        purpose=RESULT_FILE_PURPOSE,
        filename="step_metrics.csv",
        format="csv",
        num_examples=len(metrics),
        size_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        content=content,
    )
    session.add(result)
    session.flush()
    tokens = [m.tokens for m in metrics if m.tokens is not None]
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(result_file_id=result.id, trained_tokens=sum(tokens) if tokens else None)
        .execution_options(synchronize_session=False)
    )
    final_step = metrics[-1].step if metrics else job.step
    if final_step <= 0:
        return
    saved = session.scalar(
        select(Checkpoint.id).where(Checkpoint.job_id == job_id, Checkpoint.step == final_step)
    )
    if saved is None:
        last = metrics[-1] if metrics and metrics[-1].step == final_step else None
        session.add(
            Checkpoint(
                job_id=job_id,
                step=final_step,
                train_loss=last.train_loss if last else job.last_loss,
                val_loss=last.valid_loss if last else None,
                adapter_zip=adapter_zip,
                # A finished job is never resumed, so the final checkpoint carries no trainer state.
                state_zip=b"",
                sha256=adapter_sha256,
            )
        )
        session.flush()
