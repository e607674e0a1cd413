"""Wire schemas of the OpenAI-compatible API (/v1), mirroring openai-python's types
(FineTuningJob, FineTuningJobEvent, FineTuningJobCheckpoint, FileObject, cursor pages), and the
mapping of an OpenAI job request onto our JobSpec.

Our own options travel in one clearly named extra object, ``safety``, which the official SDK sends
with ``extra_body={"safety": {...}}``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PlainValidator, ValidationError, field_validator

from safetune.errors import ErrorCode, SafetuneError
from safetune.schemas import (
    DEFAULT_GUARD,
    GUARD_DESCRIPTION,
    AnchorOptions,
    ConstrainedOptions,
    EvaluationOptions,
    Hyperparameters,
    InputSchema,
    JobSpec,
    SapOptions,
    Screening,
    SelectionOptions,
    normalize_guard,
)

DEFAULT_LEARNING_RATE: float = Hyperparameters.model_fields["learning_rate"].default
# learning_rate_multiplier × DEFAULT_LEARNING_RATE must land in Hyperparameters.learning_rate's range.
MIN_LR_MULTIPLIER = 1e-6 / DEFAULT_LEARNING_RATE
MAX_LR_MULTIPLIER = 1e-2 / DEFAULT_LEARNING_RATE

OpenAIStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
# OpenAI's "validating_files" never applies: ours are validated before the job row exists.
STATUS_MAP: dict[str, OpenAIStatus] = {
    "queued": "queued",
    "running": "running",
    "evaluating": "running",  # our post-training safety evaluation is part of OpenAI's "running"
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}

# ---------------------------------------------------------------- request


def _auto_or_number(kind: type[int] | type[float], low: float, high: float) -> Any:
    """``"auto"`` or a number in [low, high], as one field with one clear error (not one per union arm)."""

    def check(value: Any) -> Any:
        if value == "auto":
            return value
        ok_type = isinstance(value, int | float) if kind is float else isinstance(value, int)
        if isinstance(value, bool) or not ok_type or not low <= value <= high:
            raise ValueError(
                f"must be 'auto' or a{'n integer' if kind is int else ' number'} from {low:g} to {high:g}"
            )
        return kind(value)

    return Annotated[
        Literal["auto"] | kind, PlainValidator(check, json_schema_input_type=Literal["auto"] | kind)
    ]


class OpenAIHyperparameters(InputSchema):
    """OpenAI's three knobs; "auto" means our default."""

    n_epochs: _auto_or_number(int, 1, 20) = "auto"  # type: ignore[valid-type]
    batch_size: _auto_or_number(int, 1, 64) = "auto"  # type: ignore[valid-type]
    learning_rate_multiplier: _auto_or_number(float, MIN_LR_MULTIPLIER, MAX_LR_MULTIPLIER) = "auto"  # type: ignore[valid-type]


class SupervisedMethod(InputSchema):
    hyperparameters: OpenAIHyperparameters | None = None


class Method(InputSchema):
    type: Literal["supervised"] = Field(description="only supervised fine-tuning is offered")
    supervised: SupervisedMethod | None = None


class SafetyExtras(InputSchema):
    """safetune's own options (not part of OpenAI's API)."""

    guard: str = Field(default=DEFAULT_GUARD, max_length=64, description=GUARD_DESCRIPTION)
    sap: SapOptions = Field(default_factory=SapOptions)
    anchor: AnchorOptions = Field(default_factory=AnchorOptions)
    constrained: ConstrainedOptions = Field(default_factory=ConstrainedOptions)
    selection: SelectionOptions = Field(default_factory=SelectionOptions)

    @field_validator("guard", mode="before")
    @classmethod
    def _known_guard(cls, value: object) -> str:
        return normalize_guard(value)

    evaluation: EvaluationOptions = Field(default_factory=EvaluationOptions)
    screening: Screening = Field(default_factory=Screening)
    eval_file: str | None = Field(default=None, max_length=64, description="evaluation-purpose file")
    validation_split: float = Field(default=0.0, ge=0.0, le=0.5)
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict,
        description="our other Hyperparameters (max_steps, checkpoint_every, lora_r, …); "
        "epochs, batch size, learning rate and seed come from the OpenAI fields",
    )


class FineTuningJobCreate(InputSchema):
    """Body of POST /v1/fine_tuning/jobs."""

    model: str = Field(min_length=1, max_length=100, description="a registered base model (GET /v1/models)")
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(default=None, max_length=64)
    hyperparameters: OpenAIHyperparameters | None = None
    method: Method | None = None
    suffix: str | None = Field(default=None, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None
    safety: SafetyExtras = Field(default_factory=SafetyExtras)


# Our JobSpec field path → the field the OpenAI request used, for error params.
_PARAMS = {
    "base_model": "model",
    "validation_file_id": "validation_file",
    "eval_file_id": "safety.eval_file",
    "suffix": "suffix",
    "hyperparameters.epochs": "hyperparameters.n_epochs",
    "hyperparameters.batch_size": "hyperparameters.batch_size",
    "hyperparameters.learning_rate": "hyperparameters.learning_rate_multiplier",
    "hyperparameters.seed": "seed",
}
_OPENAI_OWNED = {
    "epochs": "n_epochs",
    "batch_size": "batch_size",
    "learning_rate": "learning_rate_multiplier",
}


def _openai_param(param: str | None) -> str | None:
    if not param or param == "spec":
        return param
    for ours, theirs in _PARAMS.items():
        if param == ours or param.startswith(ours + "."):
            return theirs + param[len(ours) :]
    return f"safety.{param}"


def _invalid(message: str, param: str) -> SafetuneError:
    return SafetuneError(ErrorCode.SPEC_INVALID, message, param=param)


def to_job_spec(request: FineTuningJobCreate) -> JobSpec:
    """Map the OpenAI request onto our JobSpec; errors name the OpenAI request's fields."""
    if request.metadata or request.integrations:
        field = "metadata" if request.metadata else "integrations"
        raise _invalid(f"{field} is not supported by this server", field)
    hyper = request.hyperparameters
    supervised = request.method.supervised if request.method and request.method.supervised else None
    if supervised and supervised.hyperparameters:
        if hyper is not None:
            raise _invalid(
                "give hyperparameters or method.supervised.hyperparameters, not both", "hyperparameters"
            )
        hyper = supervised.hyperparameters
    hyper = hyper or OpenAIHyperparameters()

    native = dict(request.safety.hyperparameters)
    for ours, theirs in (*_OPENAI_OWNED.items(), ("seed", "seed")):
        if ours in native:
            where = "seed" if ours == "seed" else f"hyperparameters.{theirs}"
            raise _invalid(
                f"set {ours} with {where}, not safety.hyperparameters", f"safety.hyperparameters.{ours}"
            )
    if hyper.n_epochs != "auto":
        native["epochs"] = hyper.n_epochs
    if hyper.batch_size != "auto":
        native["batch_size"] = hyper.batch_size
    if hyper.learning_rate_multiplier != "auto":
        native["learning_rate"] = hyper.learning_rate_multiplier * DEFAULT_LEARNING_RATE
    if request.seed is not None:
        native["seed"] = request.seed

    safety = request.safety
    data = {
        "base_model": request.model,
        "guard": safety.guard,
        "hyperparameters": native,
        "sap": safety.sap,
        "anchor": safety.anchor,
        "constrained": safety.constrained,
        "selection": safety.selection,
        "evaluation": safety.evaluation,
        "screening": safety.screening,
        "validation_file_id": request.validation_file,
        "validation_split": safety.validation_split,
        "eval_file_id": safety.eval_file,
        "suffix": request.suffix,
    }
    try:
        return JobSpec.model_validate(data)
    except SafetuneError as exc:  # raised as-is by JobSpec's validators (unknown model, limits)
        exc.param = _openai_param(exc.param)
        raise
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first.get("loc", ())) or "spec"
        param = _openai_param(loc)
        raise _invalid(f"{param}: {first.get('msg', 'invalid value')}", param or "spec") from None


# ---------------------------------------------------------------- responses


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None
    expires_at: int | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool
    first_id: str | None
    last_id: str | None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class ModelObject(BaseModel):
    """OpenAI's Model; ``created`` is 0 for the built-in base models (they have no creation time)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class JobErrorObject(BaseModel):
    code: str
    message: str
    param: str | None = None


class JobHyperparameters(BaseModel):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float


class SafetyStatus(BaseModel):
    """safetune's extras on a job: the guard, our finer status and progress, the safety verdict."""

    guard: str
    status: str = Field(description="safetune's own status (e.g. evaluating while OpenAI's says running)")
    stage: str | None
    step: int
    total_steps: int | None
    last_loss: float | None
    verdict: str | None = Field(description="pass | warn | fail, once the safety report exists")
    report_url: str | None = Field(description="GET this for the safety report, once it exists")


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None
    model: str
    fine_tuned_model: str | None
    organization_id: str
    status: OpenAIStatus
    error: JobErrorObject | None
    hyperparameters: JobHyperparameters
    method: dict[str, Any]
    training_file: str
    validation_file: str | None
    result_files: list[str] = Field(default_factory=list)
    trained_tokens: int | None = None
    seed: int
    estimated_finish: int | None
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None
    safety: SafetyStatus


class FineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None
    type: Literal["message", "metrics"]


class CheckpointMetrics(BaseModel):
    step: float
    train_loss: float | None = None
    valid_loss: float | None = None
    full_valid_loss: float | None = None


class FineTuningJobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    step_number: int
    metrics: CheckpointMetrics
    fine_tuning_job_id: str


class JobPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class EventPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobEvent]
    has_more: bool


class CheckpointPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobCheckpoint]
    has_more: bool
    first_id: str | None
    last_id: str | None


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail
