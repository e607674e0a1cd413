"""Turning a POST /jobs or POST /files request into validated inputs. Nothing here writes rows."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request, UploadFile
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile as StarletteUploadFile

from api.deps import clean_id
from api.errors import validation_param
from safetune.config import Settings
from safetune.datasets import DatasetLimits, ParsedDataset, Purpose, parse_dataset, read_capped
from safetune.errors import ErrorCode, SafetuneError
from safetune.models import StoredFile, Tenant
from safetune.repositories import files as files_repo
from safetune.schemas import FilePurpose, JobCreate, JobSpec

MAX_SPEC_BYTES = 64 * 1024


def spec_error(exc: ValidationError) -> SafetuneError:
    """The first pydantic error as SPEC_INVALID, with param = the field path ("hyperparameters.epochs")."""
    first = exc.errors()[0]
    param = validation_param(first.get("loc", ())) if first.get("loc") else "spec"
    return SafetuneError(ErrorCode.SPEC_INVALID, f"{param}: {first.get('msg', 'invalid value')}", param=param)


def parse_upload(
    upload: UploadFile | StarletteUploadFile, purpose: Purpose, settings: Settings, tenant: Tenant
) -> ParsedDataset:
    """Read the upload in chunks (capped at the limit + 1 byte) and validate every line."""
    limits = DatasetLimits.from_settings(settings, max_bytes=tenant.max_dataset_bytes)
    data = read_capped(upload.file, limits.max_bytes)
    return parse_dataset(data, purpose, limits)


def upload_filename(upload: UploadFile | StarletteUploadFile, param: str) -> str:
    """The client's filename, as stored on the file row (Postgres text cannot hold NUL: refused)."""
    filename = upload.filename or "dataset.jsonl"
    if "\x00" in filename:
        raise SafetuneError(ErrorCode.REQUEST_INVALID, "the filename contains a NUL character", param=param)
    return filename


def request_hash(*parts: Any) -> str:
    """Fingerprint of a request for idempotency: canonical JSON of its meaningful parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_for_tenant(session: Session, tenant_id: str, file_id: str) -> StoredFile:
    """The tenant's live file, or FILE_NOT_FOUND (also for ids that cannot name a row)."""
    stored = files_repo.get_file_for_tenant(session, tenant_id, file_id) if clean_id(file_id) else None
    if stored is None:
        raise SafetuneError(ErrorCode.FILE_NOT_FOUND, f"no file with id {file_id!r}", param="file_id")
    return stored


def owned_file(
    session: Session, tenant: Tenant, file_id: str, purpose: FilePurpose, param: str
) -> StoredFile:
    stored = (
        files_repo.get_file_for_tenant(session, tenant.id, file_id, for_new_job=True)
        if "\x00" not in file_id
        else None
    )
    if stored is None:
        raise SafetuneError(ErrorCode.FILE_NOT_FOUND, f"no file with id {file_id!r}", param=param)
    if stored.purpose != purpose.value:
        raise SafetuneError(
            ErrorCode.SPEC_INVALID,
            f"file {file_id!r} was uploaded for {stored.purpose!r}, not {purpose.value!r}",
            param=param,
        )
    return stored


@dataclass
class JobSubmission:
    """POST /jobs in either shape: multipart (dataset + spec) or JSON (training_file + spec)."""

    spec: JobSpec
    dataset: StarletteUploadFile | None = None
    training_file_id: str | None = None


async def read_job_submission(request: Request) -> AsyncIterator[JobSubmission]:
    """Parse the body (not the dataset lines: that happens in the sync route). Closes temp files after."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        async with request.form(max_files=2, max_fields=10, max_part_size=MAX_SPEC_BYTES) as form:
            dataset = form.get("dataset")
            spec_text = form.get("spec")
            if not isinstance(dataset, StarletteUploadFile):
                raise SafetuneError(
                    ErrorCode.REQUEST_INVALID,
                    "multipart field 'dataset' (a file) is required",
                    param="dataset",
                )
            if not isinstance(spec_text, str):
                raise SafetuneError(
                    ErrorCode.SPEC_INVALID, "multipart field 'spec' (a JSON string) is required", param="spec"
                )
            try:
                spec = JobSpec.model_validate_json(spec_text)
            except ValidationError as exc:
                raise spec_error(exc) from None
            yield JobSubmission(spec=spec, dataset=dataset)
        return
    if content_type == "application/json":
        body = await request.body()
        try:
            create = JobCreate.model_validate_json(body)
        except ValidationError as exc:
            raise spec_error(exc) from None
        spec = JobSpec.model_validate(create.model_dump(exclude={"training_file"}))
        yield JobSubmission(spec=spec, training_file_id=create.training_file)
        return
    raise SafetuneError(
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        "send multipart/form-data (dataset + spec) or application/json (training_file + spec)",
        param="Content-Type",
    )
