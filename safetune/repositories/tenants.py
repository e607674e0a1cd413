"""Tenants and their API keys. Only add/flush: the caller owns the unit of work (STYLE rule 8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Row, Select, and_, bindparam, select, update
from sqlalchemy.orm import Session

from safetune.models import ApiKey, Job, Tenant, utcnow
from safetune.security import display_prefix, generate_api_key, generate_webhook_secret, hash_api_key

JobRow = Row[Any]  # a jobs row read with Core: the columns by name, no ORM state
J = TypeVar("J", Job, JobRow)


def create_tenant(
    session: Session,
    name: str,
    *,
    max_concurrent_jobs: int | None = None,
    max_queued_jobs: int | None = None,
    max_dataset_bytes: int | None = None,
    storage_quota_bytes: int | None = None,
) -> Tenant:
    tenant = Tenant(
        name=name,
        webhook_secret=generate_webhook_secret(),
        max_concurrent_jobs=max_concurrent_jobs,
        max_queued_jobs=max_queued_jobs,
        max_dataset_bytes=max_dataset_bytes,
        storage_quota_bytes=storage_quota_bytes,
    )
    session.add(tenant)
    session.flush()
    return tenant


def get_tenant(session: Session, tenant_id: str) -> Tenant | None:
    return session.get(Tenant, tenant_id)


def get_tenant_by_name(session: Session, name: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.name == name))


def create_api_key(session: Session, tenant_id: str) -> tuple[ApiKey, str]:
    """Returns the row and the raw key; the raw key is never stored and cannot be recovered."""
    raw = generate_api_key()
    key = ApiKey(tenant_id=tenant_id, key_hash=hash_api_key(raw), prefix=display_prefix(raw))
    session.add(key)
    session.flush()
    return key, raw


def revoke_api_key(session: Session, tenant_id: str, key_id: str) -> bool:
    """Revoke one of the tenant's keys; False when no such (unrevoked) key belongs to the tenant."""
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def list_api_keys(session: Session, tenant_id: str) -> list[ApiKey]:
    stmt = select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at)
    return list(session.scalars(stmt))


def authenticate(session: Session, raw_key: str) -> Tenant | None:
    """The tenant owning an active key, or None for unknown and revoked keys alike."""
    return session.scalar(_TENANT_FOR_KEY, {"key_hash": hash_api_key(raw_key)})


def _key_and_job(*columns: Any) -> Select[Any]:
    """An active key's row, outer-joined to its tenant's job :job_id (none when that is NULL: ``=
    NULL`` matches no row). Built once with bound parameters: building the statement and deriving
    its cache key on each call cost more CPU than running it (0.33 ms vs 0.19 ms, issue 13)."""
    return (
        select(ApiKey.tenant_id.label("key_tenant_id"), *columns)
        .select_from(ApiKey)
        .outerjoin(Job, and_(Job.tenant_id == ApiKey.tenant_id, Job.id == bindparam("job_id")))
        .where(*_ACTIVE_KEY)
    )


_ACTIVE_KEY = (ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None))
_TENANT_FOR_KEY = select(Tenant).join(ApiKey, ApiKey.tenant_id == Tenant.id).where(*_ACTIVE_KEY)
_KEY_AND_JOB = _key_and_job(Job)
_KEY_AND_JOB_ROW = _key_and_job(*Job.__table__.c)


@dataclass(frozen=True)
class KeyAndJob(Generic[J]):
    tenant_id: str
    job: J | None  # None: no such job, or another tenant's (STYLE rule 9: the same answer)


def authenticate_for_job(session: Session, raw_key: str, job_id: str | None) -> KeyAndJob[Job] | None:
    """An active key's tenant and that tenant's job ``job_id``, in one statement; None for unknown
    and revoked keys. The job is an entity of ``session``, for routes that change it or read on."""
    params = {"key_hash": hash_api_key(raw_key), "job_id": job_id}
    row = session.execute(_KEY_AND_JOB, params).first()
    return KeyAndJob(row.key_tenant_id, row.Job) if row else None


def authenticate_for_job_row(
    connection: Connection, raw_key: str, job_id: str | None
) -> KeyAndJob[JobRow] | None:
    """Like authenticate_for_job, but the job is a Core row (its columns by name, like a Job's
    attributes): for rendering only. GET /jobs/{id} runs on every poll of every client; in a
    Session, with an ORM entity, the same read took 0.30 ms of CPU instead of 0.19 (issue 13)."""
    params = {"key_hash": hash_api_key(raw_key), "job_id": job_id}
    row = connection.execute(_KEY_AND_JOB_ROW, params).first()
    if row is None:
        return None
    return KeyAndJob(row.key_tenant_id, row if row.id is not None else None)
