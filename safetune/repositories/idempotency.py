"""Idempotency keys: the same key with the same request returns the same resource; a different
request under a used key is a 409."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from safetune.errors import ErrorCode, SafetuneError
from safetune.models import IdempotencyRecord


def find_replay(session: Session, tenant_id: str, scope: str, key: str, request_hash: str) -> str | None:
    """The resource id created earlier under this key, or None if the key is new.

    Raises IDEMPOTENCY_CONFLICT when the key was used for a different request.
    """
    record = session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.tenant_id == tenant_id,
            IdempotencyRecord.scope == scope,
            IdempotencyRecord.key == key,
        )
    )
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise SafetuneError(
            ErrorCode.IDEMPOTENCY_CONFLICT,
            "this Idempotency-Key was already used with a different request",
            param="Idempotency-Key",
        )
    return record.resource_id


def record_key(
    session: Session, tenant_id: str, scope: str, key: str, request_hash: str, resource_id: str
) -> None:
    """Store the key in the caller's transaction, so it commits or rolls back with the resource."""
    record = IdempotencyRecord(
        tenant_id=tenant_id, scope=scope, key=key, request_hash=request_hash, resource_id=resource_id
    )
    try:
        # A savepoint keeps the outer transaction usable if a concurrent request won the race.
        with session.begin_nested():
            session.add(record)
    except IntegrityError:
        raise SafetuneError(
            ErrorCode.IDEMPOTENCY_CONFLICT,
            "a request with this Idempotency-Key is already being processed",
            param="Idempotency-Key",
        ) from None
