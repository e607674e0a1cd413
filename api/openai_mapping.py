"""Our rows rendered as OpenAI objects (job, event, checkpoint, file) for the /v1 routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from api.deps import clean_int
from safetune.models import Checkpoint, Job, JobEvent, StoredFile, utcnow
from safetune.openai_schemas import (
    DEFAULT_LEARNING_RATE,
    STATUS_MAP,
    CheckpointMetrics,
    FileObject,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    JobErrorObject,
    JobHyperparameters,
    ModelObject,
    SafetyStatus,
)
from safetune.schemas import FilePurpose, Hyperparameters

# OpenAI uploads every fine-tuning dataset (training and validation) with purpose "fine-tune".
OPENAI_PURPOSES = {"fine-tune": FilePurpose.TRAINING}
EVENT_PREFIX = "ftevent-"
LEVELS = {"info": "info", "warning": "warn", "warn": "warn", "error": "error"}


def unix(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def file_object(stored: StoredFile) -> FileObject:
    purpose = "fine-tune" if stored.purpose == FilePurpose.TRAINING else stored.purpose
    return FileObject(
        id=stored.id,
        bytes=stored.size_bytes,
        created_at=unix(stored.created_at) or 0,
        filename=stored.filename,
        purpose=purpose,
    )


def base_model_object(name: str) -> ModelObject:
    return ModelObject(id=name, created=0, owned_by="safetune")


def fine_tuned_model_object(job: Job) -> ModelObject:
    return ModelObject(id=_model_name(job), created=unix(job.finished_at) or 0, owned_by=job.tenant_id)


def fine_tuned_job_id(model: str) -> str | None:
    """The job id at the end of "ft:<base>:<suffix>:<job id>", or None for any other name."""
    parts = model.split(":")
    return parts[-1] if len(parts) == 4 and parts[0] == "ft" else None


def fine_tuned_model(job: Job) -> str | None:
    """OpenAI's "ft:<base>:<suffix>:<id>" naming; only a succeeded job has a model."""
    return _model_name(job) if job.status == "succeeded" else None


def _model_name(job: Job) -> str:
    return f"ft:{job.base_model}:{job.suffix or ''}:{job.id}"


def _estimated_finish(job: Job, now: datetime) -> int | None:
    """Linear extrapolation of the training steps; None until the first step is done."""
    if job.status != "running" or not job.started_at or not job.total_steps or job.step <= 0:
        return None
    elapsed = (now - job.started_at).total_seconds()
    return unix(job.started_at) + int(elapsed * job.total_steps / job.step)  # type: ignore[operator]


def job_object(job: Job, *, verdict: str | None, report_url: str | None) -> FineTuningJob:
    hp = Hyperparameters.model_validate(job.spec.get("hyperparameters", {}))
    hyperparameters = JobHyperparameters(
        n_epochs=hp.epochs,
        batch_size=hp.batch_size,
        learning_rate_multiplier=round(hp.learning_rate / DEFAULT_LEARNING_RATE, 6),
    )
    error = (
        JobErrorObject(code=job.error_code, message=job.error_message or "", param=None)
        if job.error_code
        else None
    )
    return FineTuningJob(
        id=job.id,
        created_at=unix(job.created_at) or 0,
        finished_at=unix(job.finished_at),
        model=job.base_model,
        fine_tuned_model=fine_tuned_model(job),
        organization_id=job.tenant_id,
        status=STATUS_MAP[job.status],
        error=error,
        hyperparameters=hyperparameters,
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters.model_dump()}},
        training_file=job.training_file_id,
        validation_file=job.validation_file_id,
        seed=hp.seed,
        result_files=[job.result_file_id] if job.result_file_id else [],
        trained_tokens=job.trained_tokens,
        estimated_finish=_estimated_finish(job, utcnow()),
        safety=SafetyStatus(
            guard=job.guard,
            status=job.status,
            stage=job.stage,
            step=job.step,
            total_steps=job.total_steps,
            last_loss=job.last_loss,
            verdict=verdict,
            report_url=report_url,
        ),
    )


def event_id(event: JobEvent) -> str:
    return f"{EVENT_PREFIX}{event.id}"


def parse_event_id(value: str) -> int | None:
    """ "ftevent-17" (or "17") → 17; None for anything else."""
    return clean_int(value.removeprefix(EVENT_PREFIX))


def event_object(event: JobEvent) -> FineTuningJobEvent:
    """Training steps and validation become OpenAI "metrics" events; the rest are "message" events.
    ``data.event`` keeps our own event type (queued, started, stage, checkpoint, …)."""
    data: dict[str, Any] = dict(event.data or {})
    kind = "message"
    if event.type == "metrics":
        kind = "metrics"
        data = {
            "step": data.get("step"),
            "total_steps": data.get("total_steps"),
            "train_loss": data.get("loss"),
            **data,
        }
    elif event.type == "validation":
        kind = "metrics"
        data = {"step": data.get("step"), "valid_loss": data.get("val_loss"), **data}
    return FineTuningJobEvent(
        id=event_id(event),
        created_at=unix(event.created_at) or 0,
        level=LEVELS.get(event.level, "info"),  # type: ignore[arg-type]
        message=event.message,
        data={**data, "event": event.type},
        type=kind,  # type: ignore[arg-type]
    )


def checkpoint_object(job: Job, checkpoint: Checkpoint) -> FineTuningJobCheckpoint:
    return FineTuningJobCheckpoint(
        id=checkpoint.id,
        created_at=unix(checkpoint.created_at) or 0,
        fine_tuned_model_checkpoint=f"{_model_name(job)}:ckpt-step-{checkpoint.step}",
        step_number=checkpoint.step,
        metrics=CheckpointMetrics(
            step=checkpoint.step, train_loss=checkpoint.train_loss, valid_loss=checkpoint.val_loss
        ),
        fine_tuning_job_id=job.id,
    )
