"""GET /jobs/{job_id}/adapter (PEFT zip) and GET /jobs/{job_id}/checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import APIRouter, Header, Path
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session

from api.deps import INT4_MAX, OwnedJobDep, SessionDep, clean_int
from api.errors import error_responses
from safetune.db import session_scope
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


def _chunks(read: Callable[[Session, str, int, int], bytes], row_id: str, size: int) -> Iterator[bytes]:
    # The request's session is closed once the route returns, so the stream reads with its own
    # short units of work, one chunk at a time.
    for offset in range(0, size, CHUNK_BYTES):
        with session_scope() as session:
            yield read(session, row_id, offset, CHUNK_BYTES)


@router.get(
    "/{job_id}/adapter",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}},
        304: {"description": "If-None-Match matched the ETag (the adapter's sha256)"},
        **error_responses(*OWNED_ERRORS),
    },
)
def download_adapter(
    session: SessionDep, job: OwnedJobDep, if_none_match: Annotated[str | None, Header()] = None
) -> Response:
    """The trained LoRA adapter as a zip (adapter_config.json + adapter_model.safetensors)."""
    adapter = artifacts.get_adapter_for_tenant(session, job.tenant_id, job.id, with_content=False)
    if adapter is None:
        raise SafetuneError(
            ErrorCode.ADAPTER_NOT_READY,
            f"the adapter is not ready; the job is {job.status}",
            param="job_id",
            status=job.status,
        )
    etag = f'"{adapter.sha256}"'
    if if_none_match and etag in [tag.strip() for tag in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    headers = {
        "Content-Disposition": f'attachment; filename="{job.id}-adapter.zip"',
        "ETag": etag,
        "Content-Length": str(adapter.size_bytes),
    }
    return StreamingResponse(
        _chunks(artifacts.read_adapter_chunk, job.id, adapter.size_bytes),
        media_type="application/zip",
        headers=headers,
    )


@router.get("/{job_id}/checkpoints", response_model=CheckpointList, responses=error_responses(*OWNED_ERRORS))
def list_checkpoints(session: SessionDep, job: OwnedJobDep) -> CheckpointList:
    """The job's saved checkpoints, by step, with the best step by validation loss."""
    rows = artifacts.list_checkpoints_for_tenant(session, job.tenant_id, job.id)
    data = [
        CheckpointRead.model_validate(r).model_copy(
            update={"download_url": f"/jobs/{job.id}/checkpoints/{r.step}/adapter"}
        )
        for r in rows
    ]
    return CheckpointList(data=data, best_step=artifacts.best_checkpoint_step(rows))


@router.get(
    "/{job_id}/checkpoints/{step}/adapter",
    responses={
        200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}},
        **error_responses(*OWNED_ERRORS, ErrorCode.CHECKPOINT_NOT_FOUND),
    },
)
def download_checkpoint_adapter(
    session: SessionDep,
    job: OwnedJobDep,
    step: Annotated[str, Path(pattern=r"^([0-9]{1,10}|best)$", description="a step number or 'best'")],
) -> Response:
    """A checkpoint's adapter as a PEFT zip; `best` picks the lowest validation loss."""
    number = None if step == "best" else clean_int(step)
    if step != "best" and number is None:
        raise SafetuneError(
            ErrorCode.REQUEST_INVALID,
            f"step must be a step number (at most {INT4_MAX}) or 'best'",
            param="step",
        )
    found = artifacts.get_checkpoint_for_tenant(session, job.tenant_id, job.id, number)
    if found is None:
        raise SafetuneError(
            ErrorCode.CHECKPOINT_NOT_FOUND, f"job {job.id} has no checkpoint {step!r}", param="step"
        )
    checkpoint, size = found
    headers = {
        "Content-Disposition": f'attachment; filename="{job.id}-step-{checkpoint.step}-adapter.zip"',
        "ETag": f'"{checkpoint.sha256}"',
        "Content-Length": str(size),
    }
    return StreamingResponse(
        _chunks(artifacts.read_checkpoint_chunk, checkpoint.id, size),
        media_type="application/zip",
        headers=headers,
    )
