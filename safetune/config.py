"""Service settings: one class, read from the environment (SAFETUNE_*), validated at start-up."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STATE_DIR = Path.home() / ".cache" / "safetune"
HOST_NAME = re.compile(r"(?i)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?")


class Settings(BaseSettings):
    """Every knob of the service. Unset means the embedded default (SQLite + in-process queue)."""

    model_config = SettingsConfigDict(env_prefix="SAFETUNE_", env_file=".env", extra="ignore")

    environment: Literal["dev", "test", "production"] = "dev"
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL: postgresql+psycopg://… or sqlite:///…; empty = SQLite in state_dir",
    )
    broker_url: str = Field(default="", description="Celery broker (redis://…); empty = in-process queue")
    state_dir: Path = Field(default=DEFAULT_STATE_DIR, description="embedded DB and scratch space")
    model_cache: Path = Field(
        default=DEFAULT_STATE_DIR / "models", description="converted base models live here"
    )
    models_file: Path | None = Field(
        default=None, description="operator's models YAML (safetune models add writes it); unset = built-ins"
    )
    judge_url: str = Field(
        default="",
        pattern=r"^(https?://\S+)?$",
        description="OpenAI-compatible chat endpoint of an LLM judge",
    )
    judge_model: str = Field(default="", max_length=200, description="model name the judge endpoint serves")
    judge_format: Literal["llama_guard", "rubric"] = Field(
        default="llama_guard", description="llama_guard: safe/unsafe + categories; rubric: StrongREJECT score"
    )
    judge_api_key: str = Field(default="", description="bearer token for the judge endpoint, if it needs one")
    work_dir: Path | None = Field(default=None, description="per-job scratch dirs; default state_dir/jobs")

    max_dataset_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    max_dataset_lines: int = Field(default=100_000, ge=1)
    max_line_bytes: int = Field(default=256 * 1024, ge=256)
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    max_concurrent_jobs_per_tenant: int = Field(default=4, ge=1)
    max_queued_jobs_per_tenant: int = Field(default=20, ge=1)
    rate_limit_per_minute: int = Field(default=600, ge=1)

    storage_quota_bytes: int = Field(
        default=20 * 1024**3,
        ge=0,
        description="per-tenant bytes of files, adapters and checkpoints (a tenant row may override it)",
    )
    checkpoint_keep_last: int = Field(default=3, ge=1, description="a job keeps its newest N checkpoints")
    checkpoint_keep_best: bool = Field(default=True, description="...plus the lowest validation loss")
    checkpoint_min_interval_seconds: float = Field(
        default=60.0, ge=0, description="a checkpoint sooner than this after the job's last is not stored"
    )

    report_link_ttl_seconds: int = Field(
        default=15 * 60, ge=60, description="lifetime of a report link when the request names none"
    )
    report_link_max_seconds: int = Field(
        default=24 * 3600, ge=60, description="no report link lives longer, whoever minted it"
    )
    report_link_rate_per_minute: int = Field(
        default=60, ge=1, description="report-page requests with a link token, per client address"
    )

    heartbeat_seconds: float = Field(default=5.0, gt=0)
    stale_after_seconds: float = Field(default=120.0, gt=0)
    requeue_queued_after_seconds: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    watchdog_step_factor: float = Field(
        default=10.0, gt=1, description="fail a training child silent for this many typical step times"
    )
    watchdog_min_seconds: float = Field(
        default=600.0, gt=0, description="...but never sooner than this (also the wait for step 1)"
    )
    training_device: Literal["auto", "cpu", "cuda"] = "auto"
    # What generates the safety evaluation's answers (sap_core.generation_engines): "auto" = vLLM on a
    # CUDA worker that has the vllm package, else transformers; "vllm" also falls back, with the reason
    # in the report.
    eval_engine: Literal["auto", "transformers", "vllm"] = "auto"
    # Multi-GPU jobs: more than one process per job starts the training child under
    # `torchrun --standalone --nproc_per_node N` (DDP; NCCL on GPU, gloo on CPU).
    gpus: str = Field(
        default="", pattern=r"^(\d+(,\d+)*)?$", description="GPU indices this worker owns, e.g. 0,1,2,3"
    )
    qlora_available: bool | None = Field(
        default=None, description="may jobs ask for a 4-bit base; unset = bitsandbytes is installed"
    )
    processes_per_job: int | None = Field(
        default=None, ge=1, le=64, description="ranks per job; default one per listed GPU, else 1"
    )

    webhook_allowed_hosts: str = Field(
        default="",
        description="comma-separated host names or CIDRs that may receive webhooks although not public",
    )
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_max_attempts: int = Field(default=5, ge=1, le=20, description="POSTs per event, first included")
    webhook_backoff_seconds: float = Field(
        default=2.0, ge=0, description="retry n is due backoff * 2**(n-1) seconds after attempt n"
    )
    webhook_poll_seconds: float = Field(
        default=2.0, gt=0, description="how often each worker looks for due webhook events"
    )

    @field_validator("database_url")
    @classmethod
    def _allowed_database_scheme(cls, value: str) -> str:
        if value and not value.startswith(("postgresql+psycopg://", "sqlite://")):
            raise ValueError("database_url must start with postgresql+psycopg:// or sqlite://")
        return value

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _host_names_or_networks(cls, value: str) -> str:
        for raw in value.split(","):
            entry = raw.strip().strip("[]")
            if not entry:
                continue
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not HOST_NAME.fullmatch(entry):
                    raise ValueError(f"webhook_allowed_hosts: {entry!r} is not a host name or CIDR") from None
        return value

    @model_validator(mode="after")
    def _judge_complete(self) -> Settings:
        if bool(self.judge_url) != bool(self.judge_model):
            raise ValueError("SAFETUNE_JUDGE_URL and SAFETUNE_JUDGE_MODEL must be set together")
        return self

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Settings:
        # A supervisor gives its job up when no heartbeat landed for stale_after / 2 (worker.progress),
        # and the reaper takes a job silent for stale_after: a slower heartbeat loses healthy jobs.
        if self.heartbeat_seconds >= self.stale_after_seconds / 2:
            raise ValueError(
                f"heartbeat_seconds ({self.heartbeat_seconds}) must be below half of stale_after_seconds "
                f"({self.stale_after_seconds})"
            )
        return self

    @model_validator(mode="after")
    def _ranks_fit_the_gpus(self) -> Settings:
        if self.gpu_list and self.processes_per_job and self.processes_per_job > len(self.gpu_list):
            raise ValueError(
                f"SAFETUNE_PROCESSES_PER_JOB={self.processes_per_job} exceeds the "
                f"{len(self.gpu_list)} GPUs in SAFETUNE_GPUS"
            )
        return self

    @property
    def gpu_list(self) -> list[int]:
        return [int(g) for g in self.gpus.split(",")] if self.gpus else []

    @property
    def job_processes(self) -> int:
        """Training ranks per job: SAFETUNE_PROCESSES_PER_JOB, else one per listed GPU, else 1."""
        return self.processes_per_job or len(self.gpu_list) or 1

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: jobs run in-process (the demo / single-machine default)."""
        return not self.broker_url

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'safetune.db'}"

    @property
    def jobs_dir(self) -> Path:
        return self.work_dir or self.state_dir / "jobs"


@lru_cache
def get_settings() -> Settings:
    return Settings()
