"""Uploaded datasets, tenant-scoped. Rows are only created from a fully validated ParsedDataset."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, undefer

from safetune.datasets import ParsedDataset
from safetune.models import StoredFile


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


def get_file_for_tenant(session: Session, tenant_id: str, file_id: str) -> StoredFile | None:
    """Another tenant's file id returns None, exactly like a missing one."""
    return session.scalar(
        select(StoredFile).where(StoredFile.id == file_id, StoredFile.tenant_id == tenant_id)
    )


def get_file_content(session: Session, tenant_id: str, file_id: str) -> bytes | None:
    """The normalised JSONL (one {"messages": [...]} or eval-prompt object per line)."""
    stmt = (
        select(StoredFile)
        .options(undefer(StoredFile.content))
        .where(StoredFile.id == file_id, StoredFile.tenant_id == tenant_id)
    )
    stored = session.scalar(stmt)
    return stored.content if stored else None
