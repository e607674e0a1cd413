"""Uploaded datasets and job result files, tenant-scoped. Uploads are only created from a fully
validated ParsedDataset. A deleted file is invisible to every function here except delete_file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.orm import Session, undefer

from safetune.datasets import ParsedDataset
from safetune.errors import ErrorCode, SafetuneError
from safetune.models import IdempotencyRecord, Job, JobStatus, StoredFile, utcnow

ACTIVE_JOB_STATUSES = [s.value for s in JobStatus if not s.is_terminal()]


def create_file(
    session: Session, tenant_id: str, *, purpose: str, filename: str, dataset: ParsedDataset
) -> StoredFile:
    stored = StoredFile(
        tenant_id=tenant_id,
        purpose=purpose,
        filename=filename[:255] or "dataset.jsonl",
        format=dataset.format,
        num_examples=dataset.num_examples,
        size_bytes=dataset.size_bytes,
        sha256=dataset.sha256,
        content=dataset.normalized_jsonl,
    )
    session.add(stored)
    session.flush()
    return stored


def _live(tenant_id: str, file_id: str) -> ColumnElement[bool]:
    return and_(StoredFile.id == file_id, StoredFile.tenant_id == tenant_id, StoredFile.deleted_at.is_(None))


def get_file_for_tenant(
    session: Session, tenant_id: str, file_id: str, *, for_new_job: bool = False
) -> StoredFile | None:
    """Another tenant's (or a deleted) file id returns None, exactly like a missing one.

    ``for_new_job`` takes a share lock on the row until the transaction ends, so that a concurrent
    delete_file either waits for the new job (and then refuses) or has already won (and this
    returns None): a job is never created on a file that is being deleted.
    """
    stmt = select(StoredFile).where(_live(tenant_id, file_id))
    if for_new_job:
        stmt = stmt.with_for_update(read=True)
    return session.scalar(stmt)


def get_file_content(session: Session, tenant_id: str, file_id: str) -> bytes | None:
    """The stored content: normalised JSONL for uploads (one {"messages": [...]} or eval-prompt
    object per line), CSV for result files."""
    stmt = select(StoredFile).options(undefer(StoredFile.content)).where(_live(tenant_id, file_id))
    stored = session.scalar(stmt)
    return stored.content if stored else None


def list_files(
    session: Session,
    tenant_id: str,
    *,
    purpose: str | None = None,
    after: str | None = None,
    limit: int = 100,
    order: Literal["asc", "desc"] = "desc",
) -> tuple[list[StoredFile], bool]:
    """Keyset-paginated on (created_at, id); ``after`` is the last id of the previous page.

    Returns (files, has_more). An ``after`` that names no live file of the tenant is a 422.
    """
    stmt = select(StoredFile).where(StoredFile.tenant_id == tenant_id, StoredFile.deleted_at.is_(None))
    if purpose is not None:
        stmt = stmt.where(StoredFile.purpose == purpose)
    newest_first = order == "desc"
    if after is not None:
        cursor = get_file_for_tenant(session, tenant_id, after)
        if cursor is None:
            raise SafetuneError(ErrorCode.REQUEST_INVALID, "unknown pagination cursor", param="after")
        if newest_first:
            beyond = or_(
                StoredFile.created_at < cursor.created_at,
                and_(StoredFile.created_at == cursor.created_at, StoredFile.id < cursor.id),
            )
        else:
            beyond = or_(
                StoredFile.created_at > cursor.created_at,
                and_(StoredFile.created_at == cursor.created_at, StoredFile.id > cursor.id),
            )
        stmt = stmt.where(beyond)
    keys = (
        (StoredFile.created_at.desc(), StoredFile.id.desc())
        if newest_first
        else (
            StoredFile.created_at,
            StoredFile.id,
        )
    )
    rows = list(session.scalars(stmt.order_by(*keys).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


@dataclass(frozen=True)
class Deletion:
    """How a file was deleted: ``kept_as_tombstone`` when finished jobs still name it."""

    file_id: str
    kept_as_tombstone: bool


def delete_file(session: Session, tenant_id: str, file_id: str) -> Deletion | None:
    """Delete a file; None if the tenant has no such (live) file.

    Raises FILE_IN_USE while a job that has not finished uses it (the worker reads it at every
    start and resume). A file that only finished jobs name (as training, validation, evaluation or
    result file) keeps its row with the content emptied, because those jobs' foreign keys point at
    it; any other file row is removed. Either way its idempotency keys are forgotten, so the same
    upload under the same key creates a new file.
    """
    stored = session.scalar(select(StoredFile).where(_live(tenant_id, file_id)).with_for_update())
    if stored is None:
        return None
    uses = or_(
        Job.training_file_id == file_id, Job.validation_file_id == file_id, Job.eval_file_id == file_id
    )
    active = list(
        session.scalars(
            select(Job.id).where(uses, Job.status.in_(ACTIVE_JOB_STATUSES)).order_by(Job.created_at).limit(5)
        )
    )
    if active:
        raise SafetuneError(
            ErrorCode.FILE_IN_USE,
            f"file {file_id!r} is used by unfinished job(s) {', '.join(active)}; cancel them or wait",
            param="file_id",
            job_ids=active,
        )
    named = session.scalar(select(Job.id).where(or_(uses, Job.result_file_id == file_id)).limit(1))
    session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.tenant_id == tenant_id,
            IdempotencyRecord.scope == "files",
            IdempotencyRecord.resource_id == file_id,
        )
    )
    if named is not None:
        stored.deleted_at = utcnow()
        stored.content = b""
    else:
        session.delete(stored)
    session.flush()
    return Deletion(file_id, kept_as_tombstone=named is not None)
