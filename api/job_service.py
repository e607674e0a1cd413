"""Storing an upload and submitting a job: the one implementation behind POST /files, POST /jobs and
their OpenAI-compatible twins under /v1 (which differ only in how they read and render the body).

Only add/flush here; the caller's SessionDep commits, and the job is enqueued after that commit
(STYLE rules 8 and 17).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from fastapi import UploadFile
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile as StarletteUploadFile

from api.deps import clean_id
from api.uploads import owned_file, parse_upload, request_hash, upload_filename
from safetune import queue
from safetune.config import Settings
from safetune.db import on_commit
from safetune.errors import ErrorCode, SafetuneError
from safetune.models import Job, StoredFile, Tenant
from safetune.repositories import files as files_repo
from safetune.repositories import idempotency, storage
from safetune.repositories import jobs as jobs_repo
from safetune.schemas import FilePurpose, JobSpec

RowT = TypeVar("RowT", StoredFile, Job)


@dataclass(frozen=True)
class Stored(Generic[RowT]):
    """The stored (or replayed) row; ``replayed`` is True for an Idempotency-Key replay."""

    row: RowT
    replayed: bool = False


def store_upload(
    session: Session,
    tenant: Tenant,
    settings: Settings,
    upload: UploadFile | StarletteUploadFile,
    purpose: FilePurpose,
    idempotency_key: str | None,
) -> Stored[StoredFile]:
    """Validate every line of the upload, then store it (or replay an earlier identical upload)."""
    filename = upload_filename(upload, "file")
    parsed = parse_upload(upload, purpose.value, settings, tenant)
    fingerprint = request_hash(purpose.value, filename, parsed.sha256)
    if idempotency_key:
        existing_id = idempotency.find_replay(session, tenant.id, "files", idempotency_key, fingerprint)
        existing = files_repo.get_file_for_tenant(session, tenant.id, existing_id) if existing_id else None
        if existing is not None:
            return Stored(existing, replayed=True)
    storage.check_storage_quota(session, tenant, settings, len(parsed.normalized_jsonl))
    stored = files_repo.create_file(
        session, tenant.id, purpose=purpose.value, filename=filename, dataset=parsed
    )
    if idempotency_key:
        idempotency.record_key(session, tenant.id, "files", idempotency_key, fingerprint, stored.id)
    return Stored(stored)


def _check_file(
    session: Session, tenant: Tenant, file_id: str, purposes: tuple[FilePurpose, ...], param: str
) -> StoredFile:
    # owned_file checks one purpose; check against the file's own purpose when it is one of those
    # allowed, otherwise against the first, so that the error names the purpose we expected.
    stored = files_repo.get_file_for_tenant(session, tenant.id, file_id) if "\x00" not in file_id else None
    expected = FilePurpose(stored.purpose) if stored and stored.purpose in purposes else purposes[0]
    return owned_file(session, tenant, file_id, expected, param)


def submit_job(
    session: Session,
    tenant: Tenant,
    settings: Settings,
    spec: JobSpec,
    *,
    dataset: StarletteUploadFile | None = None,
    training_file_id: str | None = None,
    idempotency_key: str | None = None,
    validation_purposes: tuple[FilePurpose, ...] = (FilePurpose.VALIDATION,),
    params: dict[str, str] | None = None,
) -> Stored[Job]:
    """Validate the dataset (inline upload or stored file) and referenced files, check the quota,
    insert the job, and enqueue it once the request's unit of work has committed.

    ``validation_purposes``: the OpenAI API uploads validation data as "fine-tune" (our training
    purpose), so /v1 also accepts training files there; the formats are identical.
    ``params``: names of the file fields in the caller's wire format, for error messages.
    """
    names = {"training_file": "training_file", "validation_file": "validation_file_id"}
    names.update(params or {})
    names.setdefault("eval_file", "eval_file_id")
    parsed = None
    if dataset is not None:
        filename = upload_filename(dataset, "dataset")
        parsed = parse_upload(dataset, "training", settings, tenant)
        dataset_ref = parsed.sha256
    else:
        assert training_file_id is not None
        dataset_ref = owned_file(
            session, tenant, training_file_id, FilePurpose.TRAINING, names["training_file"]
        ).id
    if spec.validation_file_id:
        _check_file(session, tenant, spec.validation_file_id, validation_purposes, names["validation_file"])
    if spec.eval_file_id:
        owned_file(session, tenant, spec.eval_file_id, FilePurpose.EVALUATION, names["eval_file"])

    fingerprint = request_hash(spec.model_dump(mode="json"), dataset_ref)
    if idempotency_key:
        existing_id = idempotency.find_replay(session, tenant.id, "jobs", idempotency_key, fingerprint)
        existing = jobs_repo.get_job_for_tenant(session, tenant.id, existing_id) if existing_id else None
        if existing is not None:
            return Stored(existing, replayed=True)
    jobs_repo.check_queue_quota(session, tenant, max_queued=settings.max_queued_jobs_per_tenant)
    # A job writes an adapter and checkpoints: it needs room, besides its inline dataset if any.
    storage.check_storage_quota(session, tenant, settings, len(parsed.normalized_jsonl) if parsed else 0)

    if parsed is not None:
        training_file_id = files_repo.create_file(
            session, tenant.id, purpose="training", filename=filename, dataset=parsed
        ).id
    else:
        training_file_id = dataset_ref
    job = jobs_repo.create_job(
        session,
        tenant.id,
        spec,
        training_file_id=training_file_id,
        validation_file_id=spec.validation_file_id,
        eval_file_id=spec.eval_file_id,
        idempotency_key=idempotency_key,
    )
    if idempotency_key:
        idempotency.record_key(session, tenant.id, "jobs", idempotency_key, fingerprint, job.id)
    job_id = job.id
    on_commit(session, lambda: queue.enqueue_training(job_id))
    return Stored(job)


def delete_file(session: Session, tenant_id: str, file_id: str) -> files_repo.Deletion:
    """DELETE /files/{id} and DELETE /v1/files/{id}: another tenant's file is a 404 like a missing
    one; 409 file_in_use while an unfinished job uses it."""
    cleaned = clean_id(file_id)
    deleted = files_repo.delete_file(session, tenant_id, cleaned) if cleaned else None
    if deleted is None:
        raise SafetuneError(ErrorCode.FILE_NOT_FOUND, f"no file with id {file_id!r}", param="file_id")
    return deleted
