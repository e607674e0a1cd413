"""One error type with stable machine codes; the API renders it as {"error": {...}}."""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorCode(Enum):
    """Each member is (machine code, HTTP status). Codes are part of the public API: never rename."""

    AUTH_MISSING = ("auth_missing", 401)
    AUTH_INVALID = ("auth_invalid", 401)
    NOT_FOUND = ("not_found", 404)
    JOB_NOT_FOUND = ("job_not_found", 404)
    FILE_NOT_FOUND = ("file_not_found", 404)
    REPORT_NOT_READY = ("report_not_ready", 404)
    ADAPTER_NOT_READY = ("adapter_not_ready", 404)
    CHECKPOINT_NOT_FOUND = ("checkpoint_not_found", 404)
    MODEL_NOT_FOUND = ("model_not_found", 404)
    JOB_NOT_CANCELLABLE = ("job_not_cancellable", 409)
    JOB_NOT_FINISHED = ("job_not_finished", 409)
    IDEMPOTENCY_CONFLICT = ("idempotency_conflict", 409)
    FILE_IN_USE = ("file_in_use", 409)
    PAYLOAD_TOO_LARGE = ("payload_too_large", 413)
    DATASET_TOO_LARGE = ("dataset_too_large", 413)
    STORAGE_QUOTA_EXCEEDED = ("storage_quota_exceeded", 413)
    UNSUPPORTED_MEDIA_TYPE = ("unsupported_media_type", 415)
    DATASET_EMPTY = ("dataset_empty", 422)
    DATASET_ENCODING = ("dataset_encoding", 422)
    DATASET_INVALID_LINE = ("dataset_invalid_line", 422)
    DATASET_HARMFUL = ("dataset_harmful", 422)
    SPEC_INVALID = ("spec_invalid", 422)
    BASE_MODEL_UNKNOWN = ("base_model_unknown", 422)
    REQUEST_INVALID = ("request_invalid", 422)
    QUOTA_EXCEEDED = ("quota_exceeded", 429)
    RATE_LIMITED = ("rate_limited", 429)
    INTERNAL = ("internal_error", 500)
    DATABASE_UNAVAILABLE = ("database_unavailable", 503)
    BROKER_UNAVAILABLE = ("broker_unavailable", 503)
    # Job failure codes (stored on the job, not HTTP responses). Every code a job can fail with is a
    # member: mark_failed takes an ErrorCode, and the child's codes go through for_job_failure.
    TRAINING_FAILED = ("training_failed", 500)
    BASE_MODEL_UNAVAILABLE = ("base_model_unavailable", 500)  # registered, but not in the model cache
    EVALUATION_FAILED = ("evaluation_failed", 500)  # training finished; the safety report is unusable
    TRAINING_DIVERGED = ("training_diverged", 422)  # the loss became NaN/inf: the spec or data, not us
    TRAINING_STALLED = ("training_stalled", 500)
    WORKER_LOST = ("worker_lost", 500)

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def http_status(self) -> int:
        return self.value[1]

    @classmethod
    def for_job_failure(cls, code: object) -> ErrorCode | None:
        """The member whose machine code is ``code`` (e.g. from the training child), else None."""
        return next((member for member in cls if member.code == code), None)


class SafetuneError(Exception):
    """A domain error that knows its machine code, the offending parameter and (for datasets) line."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        param: str | None = None,
        line: int | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.line = line
        self.extra = extra

    def to_body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code.code,
                "message": self.message,
                "param": self.param,
                "line": self.line,
                **self.extra,
            }
        }
