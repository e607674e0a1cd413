"""OpenAI's /v1/files: upload, list, retrieve, delete, download.

Deleting a file that an unfinished job uses is a 409 file_in_use (the worker reads it at every start
and resume); a file that only finished jobs name disappears from every route but keeps its row, so
those jobs still show its id (safetune.repositories.files.delete_file).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Path, Query, UploadFile
from fastapi.responses import Response

from api import job_service, openai_mapping
from api.cursors import FileCursor
from api.deps import SessionDep, SettingsDep, TenantDep
from api.openai_errors import OPENAI_ERROR_RESPONSES, OpenAIRoute
from api.routes.openai_compat import IdempotencyKey
from api.uploads import file_for_tenant
from safetune.openai_schemas import FileDeleted, FileList, FileObject
from safetune.repositories import files as files_repo
from safetune.schemas import RESULT_FILE_PURPOSE, FilePurpose

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute, responses=OPENAI_ERROR_RESPONSES)

# OpenAI's "fine-tune" plus our own purposes (safetune.schemas.FilePurpose), as an enum in OpenAPI.
UploadPurpose = Literal["fine-tune", "training", "validation", "evaluation"]
ListedPurpose = Literal["fine-tune", "training", "validation", "evaluation", "fine-tune-results"]
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8"}


def _stored_purpose(value: str) -> str:
    """OpenAI's "fine-tune" is our training data; other names are stored as they are."""
    mapped = openai_mapping.OPENAI_PURPOSES.get(value)
    return mapped.value if mapped else value


@router.post("/files", response_model=FileObject)
def create_file(
    session: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="JSONL dataset")],
    purpose: Annotated[UploadPurpose, Form()],
    idempotency_key: IdempotencyKey = None,
) -> FileObject:
    """Upload a JSONL dataset (purpose "fine-tune"); every line is validated before it is stored."""
    stored_purpose = FilePurpose(_stored_purpose(purpose))
    stored = job_service.store_upload(session, tenant, settings, file, stored_purpose, idempotency_key)
    return openai_mapping.file_object(stored.row)


@router.get("/files", response_model=FileList)
def list_files(
    session: SessionDep,
    tenant: TenantDep,
    purpose: Annotated[ListedPurpose | None, Query(description="only files of this purpose")] = None,
    after: FileCursor = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Annotated[Literal["asc", "desc"], Query(description="by created_at")] = "desc",
) -> FileList:
    """The organization's files (uploads and job result files), newest first by default."""
    rows, has_more = files_repo.list_files(
        session,
        tenant.id,
        purpose=_stored_purpose(purpose) if purpose else None,
        after=after,
        limit=limit,
        order=order,
    )
    data = [openai_mapping.file_object(row) for row in rows]
    return FileList(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get("/files/{file_id}", response_model=FileObject)
def retrieve_file(session: SessionDep, tenant: TenantDep, file_id: Annotated[str, Path()]) -> FileObject:
    """Metadata of one file."""
    return openai_mapping.file_object(file_for_tenant(session, tenant.id, file_id))


@router.delete("/files/{file_id}", response_model=FileDeleted)
def delete_file(session: SessionDep, tenant: TenantDep, file_id: Annotated[str, Path()]) -> FileDeleted:
    """Delete a file; 409 file_in_use while an unfinished job uses it."""
    return FileDeleted(id=job_service.delete_file(session, tenant.id, file_id).file_id, deleted=True)


@router.get(
    "/files/{file_id}/content",
    response_class=Response,
    responses={
        200: {
            "content": {
                "application/jsonl": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
            "description": "uploads as their normalised JSONL; result files as CSV",
        }
    },
)
def download_file(session: SessionDep, tenant: TenantDep, file_id: Annotated[str, Path()]) -> Response:
    """The file's stored content: an upload's normalised JSONL, or a job's metrics CSV."""
    stored = file_for_tenant(session, tenant.id, file_id)
    content = files_repo.get_file_content(session, tenant.id, stored.id) or b""
    # Content-Length is that of the stored bytes (Response computes it): size_bytes / `bytes` is
    # the size of the upload as sent, which normalisation changes.
    extension = "csv" if stored.purpose == RESULT_FILE_PURPOSE else "jsonl"
    return Response(
        content,
        media_type=MEDIA_TYPES.get(stored.format, "application/jsonl"),
        headers={"Content-Disposition": f'attachment; filename="{stored.id}.{extension}"'},
    )
