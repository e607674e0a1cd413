"""Tenants and their API keys. Only add/flush: the caller owns the unit of work (STYLE rule 8)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from safetune.models import ApiKey, Tenant, utcnow
from safetune.security import display_prefix, generate_api_key, generate_webhook_secret, hash_api_key


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


def authenticate(session: Session, raw_key: str) -> tuple[Tenant, ApiKey] | None:
    """The tenant owning an active key, or None for unknown and revoked keys alike."""
    row = session.execute(
        select(Tenant, ApiKey)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == hash_api_key(raw_key), ApiKey.revoked_at.is_(None))
    ).first()
    return (row[0], row[1]) if row else None
