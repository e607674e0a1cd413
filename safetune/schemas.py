"""Public API schemas (pydantic), kept separate from the ORM models (STYLE rule 13)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from safetune.base_models import get_base_model
from safetune.capabilities import qlora_available
from safetune.config import get_settings
from safetune.errors import ErrorCode, SafetuneError
from safetune.webhook_targets import WebhookTargetRejected, check_webhook_url

KNOWN_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _reject_nul(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    if isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key)
            _reject_nul(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _reject_nul(item)
    return value


class Schema(BaseModel):
    """Shared base of the *Read models: reads ORM attributes (and Core rows) by name."""

    model_config = ConfigDict(from_attributes=True)


class InputSchema(Schema):
    """Base of what clients send: unknown fields and NUL characters anywhere are refused (Postgres
    text columns cannot store NUL, and it is never legitimate in a spec). The *Read models skip the
    walk: they are built from rows Postgres stored, and walking every response's spec cost ~25 µs of
    the GET /jobs/{id} hot path (issue 13)."""

    model_config = ConfigDict(from_attributes=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return _reject_nul(data)


class Guard(StrEnum):
    """The guard parts a job may combine (the same names as sap_core.config.GUARD_NAMES, tested)."""

    SAP = "sap"
    EMA = "ema"
    ANCHOR = "anchor"
    CONSTRAINED = "constrained"
    NONE = "none"


# The guard new jobs get: the one bench/safety_frontier.py shows best at matched utility
# (sap_core.config.DEFAULT_GUARD; a test keeps the two equal).
DEFAULT_GUARD = "anchor"
GUARD_DESCRIPTION = (
    "none | sap | ema | anchor | constrained, or several joined by '+' (e.g. 'anchor+constrained'), "
    "or a list of names"
)


def normalize_guard(value: object) -> str:
    """'anchor+constrained' or ['anchor', 'constrained'] -> 'anchor+constrained', validated.

    Raises:
        ValueError: unknown part, a repeated part, or 'none' combined with another guard.
    """
    if isinstance(value, list | tuple):
        parts = [str(v).strip() for v in value]
    elif isinstance(value, str):
        parts = [p.strip() for p in value.split("+")]
    else:
        raise ValueError("guard must be a string or a list of guard names")
    known = [g.value for g in Guard]
    unknown = [p for p in parts if p not in known]
    if unknown or not parts:
        raise ValueError(f"unknown guard part(s) {unknown}; choose from {known}, joined by '+'")
    if len(set(parts)) != len(parts):
        raise ValueError("a guard part is named twice")
    if "none" in parts and len(parts) > 1:
        raise ValueError("'none' cannot be combined with another guard")
    return "+".join(parts)


class LrSchedule(StrEnum):
    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"


class FilePurpose(StrEnum):
    TRAINING = "training"
    VALIDATION = "validation"
    EVALUATION = "evaluation"


# A succeeded job's metrics CSV (OpenAI's name); written by the service, never uploaded.
RESULT_FILE_PURPOSE = "fine-tune-results"


class Hyperparameters(InputSchema):
    epochs: int = Field(default=1, ge=1, le=20)
    max_steps: int | None = Field(default=None, ge=1, le=100_000)
    batch_size: int = Field(default=8, ge=1, le=64)
    grad_accum: int = Field(default=1, ge=1, le=64)
    learning_rate: float = Field(default=2e-4, ge=1e-6, le=1e-2)
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    warmup_ratio: float = Field(default=0.03, ge=0.0, le=0.5)
    lr_schedule: LrSchedule = LrSchedule.COSINE
    max_grad_norm: float = Field(default=1.0, gt=0.0, le=100.0)
    lora_r: int = Field(default=8, ge=1, le=256)
    lora_alpha: int = Field(default=16, ge=1, le=512)
    lora_dropout: float = Field(default=0.05, ge=0.0, le=0.5)
    target_modules: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=7,
        description="null = the model's default: q/k/v/o_proj for the built-ins; for a models-file "
        "entry its lora_target_modules, else every linear layer of the decoder",
    )
    max_seq_len: int = Field(default=512, ge=32, le=4096)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    eval_every: int = Field(default=0, ge=0, le=100_000, description="0 = only at the end")
    checkpoint_every: int = Field(default=0, ge=0, le=100_000, description="0 = no checkpoints")
    ema_decay: float = Field(default=0.99, ge=0.0, le=1.0)
    gradient_checkpointing: Literal["auto", "on", "off"] = Field(
        default="auto", description="recompute activations in backward; auto = on from 1B parameters"
    )
    quantization: Literal["4bit"] | None = Field(
        default=None, description="4bit = QLoRA: the frozen base in NF4 (needs bitsandbytes and a GPU)"
    )

    @field_validator("quantization")
    @classmethod
    def _workers_can_quantize(cls, value: str | None) -> str | None:
        if value is not None and not qlora_available(get_settings()):
            raise SafetuneError(
                ErrorCode.SPEC_INVALID,
                "quantization '4bit' (QLoRA) needs bitsandbytes and a GPU on the workers, and this "
                "deployment has none; train without quantization",
                param="hyperparameters.quantization",
            )
        return value

    @field_validator("target_modules")
    @classmethod
    def _known_modules(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = sorted(set(value) - set(KNOWN_TARGET_MODULES))
        if unknown:
            raise ValueError(f"unknown target modules {unknown}; choose from {list(KNOWN_TARGET_MODULES)}")
        return sorted(set(value), key=KNOWN_TARGET_MODULES.index)


class SapOptions(InputSchema):
    probe_layers: list[int] | None = Field(default=None, max_length=64, description="None = middle band")
    probe_step: float = Field(default=0.05, gt=0.0, le=1.0)
    radius: float | None = Field(default=None, gt=0.0, le=100.0)
    refresh_every: int = Field(default=8, ge=1, le=10_000)
    probe_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="examples of each batch used for the probe; None = server default",
    )
    lagged_probe: bool = Field(default=False, description="reference-code ordering (one pass cheaper)")

    @field_validator("probe_layers")
    @classmethod
    def _non_negative(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(layer < 0 or layer > 1024 for layer in value):
            raise ValueError("probe layer indices must be between 0 and 1024")
        return value


class AnchorOptions(InputSchema):
    """guard 'anchor': the base's own refusals as an anchor, with gradient surgery."""

    weight: float = Field(default=1.0, ge=0.0, le=100.0, description="rho: step on g_task' + rho * g_anchor")
    projection: bool = Field(default=True, description="false = plain replay (no gradient surgery)")
    loss: Literal["kl", "ce"] = Field(default="kl", description="KL to the base, or CE on its answers")
    batch_size: int = Field(default=4, ge=1, le=64)
    benign_per_batch: int | None = Field(
        default=None,
        ge=0,
        le=63,
        description="benign requests in each anchor batch (< batch_size; default half the batch)",
    )
    every: int = Field(default=1, ge=1, le=1000, description="anchor every k optimizer steps")
    n_harmful: int = Field(default=96, ge=1, le=128)
    n_benign: int = Field(default=32, ge=0, le=128)
    max_new_tokens: int = Field(default=48, ge=1, le=256, description="length of the base's cached answers")

    @model_validator(mode="after")
    def _benign_leaves_room_for_harmful(self) -> AnchorOptions:
        # Stored resolved, by the rule of sap_core's AnchorConfig.benign_count (safetune cannot import
        # sap_core; tests/safetune/test_guard_names.py holds the two equal).
        if self.benign_per_batch is None:
            self.benign_per_batch = self.batch_size // 2
        if self.benign_per_batch >= self.batch_size:
            raise ValueError(
                f"benign_per_batch ({self.benign_per_batch}) must be below batch_size ({self.batch_size})"
            )
        return self


class ConstrainedOptions(InputSchema):
    """guard 'constrained': token-wise constrained SFT, beta by response position."""

    first_beta: float = Field(default=0.5, gt=0.0, le=100.0)
    early_beta: float = Field(default=2.0, gt=0.0, le=100.0)
    early_tokens: int = Field(default=5, ge=1, le=64)
    late_beta: float = Field(default=0.1, gt=0.0, le=100.0)


class SelectionOptions(InputSchema):
    """Post-hoc safety-constrained selection over the job's evaluated checkpoints and LoRA scales."""

    enabled: bool = False
    scales: list[float] = Field(default_factory=lambda: [1.0, 0.9, 0.8], min_length=1, max_length=8)
    utility_budget: float = Field(
        default=0.02, ge=0.0, le=0.5, description="allowed val-loss increase over the final adapter"
    )
    snapshots: int = Field(default=3, ge=1, le=10, description="evenly spaced steps kept as candidates")
    max_prompts: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="cap on the harmful selection prompts each candidate answers (null = all 92)",
    )

    @field_validator("scales")
    @classmethod
    def _scales_in_range(cls, value: list[float]) -> list[float]:
        if any(not 0.0 < x <= 1.0 for x in value):
            raise ValueError("LoRA scales must be in (0, 1]")
        return value


class Screening(InputSchema):
    reject_harmful_share: float | None = Field(
        default=None, ge=0.0, le=1.0, description="reject the dataset if this share of examples is harmful"
    )


class EvaluationThresholds(InputSchema):
    max_harmful_increase: float = Field(default=0.10, ge=0.0, le=1.0)
    max_harmful_score: float = Field(default=0.30, ge=0.0, le=1.0)
    max_over_refusal_increase: float = Field(default=0.10, ge=0.0, le=1.0)
    max_val_loss_increase: float | None = Field(
        default=None,
        ge=0.0,
        description="warn when the task loss rises by more than this fraction during training; null = off",
    )


class EvaluationOptions(InputSchema):
    """The post-training safety evaluation (base vs fine-tuned on held-out prompt sets)."""

    max_prompts: int | None = Field(default=None, ge=1, le=10_000, description="cap per prompt set")
    max_new_tokens: int = Field(default=64, ge=1, le=512)
    batch_size: int = Field(
        default=64, ge=1, le=128, description="prompts per generation batch (halved when it does not fit)"
    )
    thresholds: EvaluationThresholds = Field(default_factory=EvaluationThresholds)


class JobSpec(InputSchema):
    """What to train. Sent as the multipart `spec` field, or inlined in a JSON body with `training_file`."""

    # The registry includes the operator's models file, read at start-up, so OpenAPI names no enum.
    base_model: str = Field(max_length=100, description="a registered base model (GET /models)")
    guard: str = Field(default=DEFAULT_GUARD, max_length=64, description=GUARD_DESCRIPTION)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    sap: SapOptions = Field(default_factory=SapOptions)
    anchor: AnchorOptions = Field(default_factory=AnchorOptions)
    constrained: ConstrainedOptions = Field(default_factory=ConstrainedOptions)
    selection: SelectionOptions = Field(default_factory=SelectionOptions)
    validation_file_id: str | None = Field(default=None, max_length=64)
    validation_split: float = Field(default=0.0, ge=0.0, le=0.5)
    eval_file_id: str | None = Field(default=None, max_length=64)
    suffix: str | None = Field(default=None, max_length=40, pattern=r"^[a-z0-9-]+$")
    webhook_url: str | None = Field(default=None, max_length=2000, pattern=r"^https?://[^\s]+$")
    screening: Screening = Field(default_factory=Screening)
    evaluation: EvaluationOptions = Field(default_factory=EvaluationOptions)

    @field_validator("webhook_url")
    @classmethod
    def _receiver_allowed(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_webhook_url(value)  # resolved again at every delivery
            except WebhookTargetRejected as exc:
                raise SafetuneError(ErrorCode.SPEC_INVALID, str(exc), param="webhook_url") from exc
        return value

    @field_validator("guard", mode="before")
    @classmethod
    def _known_guard(cls, value: object) -> str:
        return normalize_guard(value)

    @property
    def guard_parts(self) -> list[str]:
        return self.guard.split("+")

    @field_validator("base_model")
    @classmethod
    def _registered(cls, value: str) -> str:
        # Raises SafetuneError(BASE_MODEL_UNKNOWN), which pydantic lets through unchanged.
        get_base_model(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.validation_file_id and self.validation_split:
            raise ValueError("give validation_file_id or validation_split, not both")
        # Limits that depend on the chosen base model; raised directly so that param names the field.
        info = get_base_model(self.base_model)
        if self.hyperparameters.max_seq_len > info.max_seq_len:
            raise SafetuneError(
                ErrorCode.SPEC_INVALID,
                f"max_seq_len {self.hyperparameters.max_seq_len} exceeds {info.name}'s {info.max_seq_len}",
                param="hyperparameters.max_seq_len",
            )
        if "sap" in self.guard_parts and self.hyperparameters.max_seq_len < info.min_sap_seq_len:
            raise SafetuneError(
                ErrorCode.SPEC_INVALID,
                f"guard 'sap' needs max_seq_len >= {info.min_sap_seq_len} with {info.name}: shorter "
                "sequences cut the responses off SAP's contrastive pairs",
                param="hyperparameters.max_seq_len",
            )
        layers = self.sap.probe_layers or []
        if any(layer >= info.num_layers for layer in layers):
            raise SafetuneError(
                ErrorCode.SPEC_INVALID,
                f"probe_layers must be below {info.name}'s {info.num_layers} layers",
                param="sap.probe_layers",
            )
        return self


class JobCreate(JobSpec):
    """JSON body of POST /jobs: a previously uploaded training file plus the spec."""

    training_file: str = Field(min_length=1, max_length=64)


class ErrorDetail(BaseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None
    status: str | None = Field(default=None, description="the job status, for *_not_ready errors")


class ErrorBody(BaseModel):
    error: ErrorDetail


class JobError(BaseModel):
    code: str
    message: str


class StageProgress(BaseModel):
    """Progress of the current long stage (today the safety evaluation: prompts answered)."""

    stage: str
    done: int = Field(ge=0, description="units finished (prompts answered, for `evaluating`)")
    total: int = Field(ge=0, description="units in the stage")
    eta_s: float | None = Field(default=None, description="seconds left at the rate so far; null early on")


class JobRead(Schema):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    status: str
    stage: str | None
    stage_progress: StageProgress | None = Field(
        default=None, description="done/total and ETA of a long stage; null when the stage reports none"
    )
    base_model: str
    guard: str
    suffix: str | None
    step: int
    total_steps: int | None
    last_loss: float | None
    last_val_loss: float | None
    best_step: int | None
    tokens_per_second: float | None
    error: JobError | None
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    training_file: str
    validation_file: str | None
    eval_file: str | None
    spec: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _from_orm(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return data
        error = {"code": data.error_code, "message": data.error_message or ""} if data.error_code else None
        fields = {
            name: getattr(data, name)
            for name in cls.model_fields
            if name not in ("object", "error", "training_file", "validation_file", "eval_file")
        }
        return {
            **fields,
            "error": error,
            "training_file": data.training_file_id,
            "validation_file": data.validation_file_id,
            "eval_file": data.eval_file_id,
        }


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobRead]
    has_more: bool
    next: str | None = Field(description="pass as `after` to get the next page; null on the last page")


class JobEventRead(Schema):
    id: int
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: datetime
    level: str
    type: str
    message: str
    data: dict[str, Any] | None


class JobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEventRead]
    has_more: bool


class FileRead(Schema):
    id: str
    object: Literal["file"] = "file"
    purpose: str
    filename: str
    format: str
    num_examples: int
    size_bytes: int
    sha256: str
    created_at: datetime


class Deleted(BaseModel):
    """The answer to a DELETE: what is gone (object: "file" or "fine_tuning.job")."""

    id: str
    object: Literal["file", "fine_tuning.job"]
    deleted: Literal[True] = True


class BaseModelRead(Schema):
    name: str
    object: Literal["base_model"] = "base_model"
    description: str
    max_seq_len: int
    num_layers: int
    min_sap_seq_len: int = Field(description="the shortest hyperparameters.max_seq_len for guard 'sap'")
    source: str = Field(description="tiny | gguf | derived (built-ins) or file (the operator's models file)")
    chat_template: str = Field(description="tokenizer, a built-in template name, or a .jinja file")
    aligned_from: str | None = None


class BaseModelList(Schema):
    object: Literal["list"] = "list"
    data: list[BaseModelRead]


class SafetyReportRead(Schema):
    job_id: str
    object: Literal["safety_report"] = "safety_report"
    schema_version: int
    verdict: str
    base_harmful_score: float | None
    tuned_harmful_score: float | None
    report: dict[str, Any]
    created_at: datetime


class CheckpointRead(Schema):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    step: int
    train_loss: float | None
    val_loss: float | None
    sha256: str
    created_at: datetime
    download_url: str | None = Field(default=None, description="PEFT adapter zip of this checkpoint")


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CheckpointRead]
    best_step: int | None = Field(
        default=None, description="lowest validation loss; GET …/checkpoints/best/adapter"
    )


class HealthRead(BaseModel):
    status: Literal["ok"] = "ok"
    checks: dict[str, str] = Field(default_factory=dict)
