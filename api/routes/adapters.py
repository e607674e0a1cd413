"""GET /jobs/{job_id}/adapter (PEFT zip) and GET /jobs/{job_id}/checkpoints."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.deps import OwnedJobDep, SessionDep
from api.errors import error_responses
from safetune.errors import ErrorCode, SafetuneError
from safetune.repositories import artifacts
from safetune.schemas import CheckpointList, CheckpointRead

router = APIRouter(prefix="/jobs", tags=["adapters"])

OWNED_ERRORS = (
    ErrorCode.AUTH_MISSING,
    ErrorCode.RATE_LIMITED,
    ErrorCode.REQUEST_INVALID,
    ErrorCode.JOB_NOT_FOUND,
)
CHUNK_BYTES = 256 * 1024


def _chunks(content: bytes) -> Iterator[bytes]:
    view = memoryview(content)
    for start in range(0, len(view), CHUNK_BYTES):
        yield bytes(view[start : start + CHUNK_BYTES])


@router.get(
    "/{job_id}/adapter",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}},
        **error_responses(*OWNED_ERRORS),
    },
)
def download_adapter(session: SessionDep, job: OwnedJobDep) -> StreamingResponse:
    """The trained LoRA adapter as a zip (adapter_config.json + adapter_model.safetensors)."""
    adapter = artifacts.get_adapter_for_tenant(session, job.tenant_id, job.id)
    if adapter is None:
        raise SafetuneError(
            ErrorCode.ADAPTER_NOT_READY,
            f"the adapter is not ready; the job is {job.status}",
            param="job_id",
            status=job.status,
        )
    headers = {
        "Content-Disposition": f'attachment; filename="{job.id}-adapter.zip"',
        "ETag": f'"{adapter.sha256}"',
        "Content-Length": str(adapter.size_bytes),
    }
    return StreamingResponse(_chunks(adapter.content), media_type="application/zip", headers=headers)


@router.get("/{job_id}/checkpoints", response_model=CheckpointList, responses=error_responses(*OWNED_ERRORS))
def list_checkpoints(session: SessionDep, job: OwnedJobDep) -> CheckpointList:
    """The job's saved checkpoints, by step."""
    rows = artifacts.list_checkpoints_for_tenant(session, job.tenant_id, job.id)
    return CheckpointList(data=[CheckpointRead.model_validate(r) for r in rows])
