"""POST /files, GET /files/{file_id}: validated dataset uploads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Path, UploadFile
from fastapi.responses import JSONResponse

from api import job_service
from api.deps import SessionDep, SettingsDep, TenantDep
from api.errors import BAD_REQUEST, error_responses
from api.uploads import file_for_tenant
from safetune.errors import ErrorCode
from safetune.schemas import Deleted, FilePurpose, FileRead

router = APIRouter(prefix="/files", tags=["files"])

AUTH_ERRORS = (ErrorCode.AUTH_MISSING, ErrorCode.RATE_LIMITED, ErrorCode.REQUEST_INVALID)


@router.post(
    "",
    response_model=FileRead,
    status_code=201,
    responses={
        200: {"model": FileRead, "description": "idempotent replay of an earlier upload"},
        **error_responses(
            *AUTH_ERRORS,
            ErrorCode.IDEMPOTENCY_CONFLICT,
            ErrorCode.DATASET_TOO_LARGE,
            ErrorCode.DATASET_INVALID_LINE,
            ErrorCode.DATASET_EMPTY,
            ErrorCode.DATASET_ENCODING,
            ErrorCode.PAYLOAD_TOO_LARGE,
            ErrorCode.STORAGE_QUOTA_EXCEEDED,
        ),
        **BAD_REQUEST,
    },
)
def upload_file(
    session: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="JSONL dataset")],
    purpose: Annotated[FilePurpose, Form()],
    idempotency_key: Annotated[str | None, Header(max_length=200, pattern=r"^[!-~]+$")] = None,
) -> FileRead | JSONResponse:
    """Upload a JSONL dataset; every line is validated before anything is stored."""
    stored = job_service.store_upload(session, tenant, settings, file, purpose, idempotency_key)
    if stored.replayed:
        return JSONResponse(FileRead.model_validate(stored.row).model_dump(mode="json"), status_code=200)
    return FileRead.model_validate(stored.row)


@router.get(
    "/{file_id}", response_model=FileRead, responses=error_responses(*AUTH_ERRORS, ErrorCode.FILE_NOT_FOUND)
)
def get_file(session: SessionDep, tenant: TenantDep, file_id: Annotated[str, Path()]) -> FileRead:
    """Metadata of one uploaded file."""
    return FileRead.model_validate(file_for_tenant(session, tenant.id, file_id))


@router.delete(
    "/{file_id}",
    response_model=Deleted,
    responses=error_responses(*AUTH_ERRORS, ErrorCode.FILE_NOT_FOUND, ErrorCode.FILE_IN_USE),
)
def delete_file(session: SessionDep, tenant: TenantDep, file_id: Annotated[str, Path()]) -> Deleted:
    """Delete an uploaded file and its content; 409 file_in_use while an unfinished job uses it."""
    return Deleted(id=job_service.delete_file(session, tenant.id, file_id).file_id, object="file")
