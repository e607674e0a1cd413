"""Annotated dependencies: SessionDep (unit of work), TenantDep (API key), OwnedJobDep (404 if not owned)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from safetune.config import Settings, get_settings
from safetune.db import session_scope
from safetune.errors import ErrorCode, SafetuneError
from safetune.models import Job, Tenant
from safetune.repositories import jobs as jobs_repo
from safetune.repositories import tenants as tenants_repo
from safetune.security import RateLimiter, hash_api_key


def get_session() -> Iterator[Session]:
    """One unit of work per request: commit once on success, roll back on any exception; what a
    route registered with safetune.db.on_commit (enqueue a job: STYLE rule 17) runs after the commit."""
    with session_scope() as session:
        yield session


# scope="function": the commit happens before the response is sent, so a 201 is never
# returned for a row that later failed to commit.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


# Declares the bearer scheme in OpenAPI; get_tenant reads the raw header itself so that it can tell
# a missing key (auth_missing) from a malformed one (auth_invalid).
bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <api key>")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def get_tenant(
    request: Request,
    session: SessionDep,
    limiter: Annotated[RateLimiter, Depends(get_rate_limiter)],
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Tenant:
    """Authorization: Bearer <key> → the key's tenant; 401 for missing, unknown or revoked keys.

    Both budgets are checked before the key lookup, so a client past them costs no DB query (issue
    13): one per presented key (valid or not, keyed by its hash), and one per client address for
    failed lookups, which a client rotating made-up keys runs out of.
    """
    if not authorization:
        raise SafetuneError(
            ErrorCode.AUTH_MISSING, "missing Authorization header (Bearer <api key>)", param="Authorization"
        )
    scheme, _, raw_key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not raw_key.strip():
        raise SafetuneError(
            ErrorCode.AUTH_INVALID, "expected 'Authorization: Bearer <api key>'", param="Authorization"
        )
    key = raw_key.strip()
    failures = f"auth-failures:{client_address(request)}"
    # First, so that a client rotating made-up keys stops creating a bucket per key once it is out.
    limiter.ensure_available(failures, what="failed authentications from this client")
    limiter.check(f"key:{hash_api_key(key)}")
    found = tenants_repo.authenticate(session, key)
    if found is None:
        limiter.check(failures, what="failed authentications from this client")
        raise SafetuneError(ErrorCode.AUTH_INVALID, "invalid or revoked API key", param="Authorization")
    return found[0]


TenantDep = Annotated[Tenant, Depends(get_tenant)]


def job_not_found(job_id: str) -> SafetuneError:
    """The same body for a missing job and another tenant's job (STYLE rule 9)."""
    return SafetuneError(ErrorCode.JOB_NOT_FOUND, f"no job with id {job_id!r}", param="job_id")


def clean_id(value: str) -> str | None:
    """An id as given, or None when it cannot name any row (Postgres rejects NUL in text)."""
    return None if "\x00" in value or len(value) > 64 else value


INT4_MAX = 2**31 - 1


def clean_int(value: str) -> int | None:
    """A decimal row number (step, event id) as given, or None when it cannot name any row.

    ASCII digits only: str.isdigit() also accepts "²" (int() raises) and "٣" (int() reads 3). Above
    INT4_MAX a Postgres integer parameter overflows, so no row can have that number either.
    """
    number = int(value) if value.isascii() and value.isdigit() else None
    return number if number is not None and number <= INT4_MAX else None


def get_owned_job(session: SessionDep, tenant: TenantDep, job_id: Annotated[str, Path()]) -> Job:
    cleaned = clean_id(job_id)
    job = jobs_repo.get_job_for_tenant(session, tenant.id, cleaned) if cleaned else None
    if job is None:
        raise job_not_found(job_id)
    return job


OwnedJobDep = Annotated[Job, Depends(get_owned_job)]
