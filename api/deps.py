"""Annotated dependencies: SessionDep (unit of work), TenantDep (API key), OwnedJobDep (404 if not
owned) and OwnedJobRowDep (the same answers, read without a Session, for routes that only render)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Depends, Header, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from safetune.config import Settings, get_settings
from safetune.db import AFTER_COMMIT, end_unit_of_work, open_unit_of_work, read_connection
from safetune.errors import ErrorCode, SafetuneError
from safetune.models import Job, Tenant
from safetune.repositories import jobs as jobs_repo
from safetune.repositories import tenants as tenants_repo
from safetune.repositories.tenants import J, JobRow, KeyAndJob
from safetune.security import RateLimiter, hash_api_key


def _touched(session: Session) -> bool:
    """Whether finishing the session can do I/O: a transaction begun, objects to flush, callbacks."""
    pending = session.new or session.dirty or session.deleted
    return bool(session.in_transaction() or pending or session.info.get(AFTER_COMMIT))


async def get_session() -> AsyncIterator[Session]:
    """One unit of work per request: commit once on success, roll back on any exception; what a
    route registered with safetune.db.on_commit (enqueue a job: STYLE rule 17) runs after the commit.

    Async, so opening it costs no threadpool hop (a Session connects at its first statement, not
    here), and finishing it costs one only if the request used it: commit, rollback and the
    callbacks (e.g. sending to the broker) block (issue 13: every sync dependency was a hop).
    """
    session = open_unit_of_work()
    try:
        yield session
    except BaseException:
        if _touched(session):
            # Shielded: a cancelled request must still give its connection back, rolled back.
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(end_unit_of_work, session, failed=True)
        else:
            session.close()  # never connected: nothing to send
        raise
    if _touched(session):
        await run_in_threadpool(end_unit_of_work, session, failed=False)
    else:
        session.close()


# scope="function": the commit happens before the response is sent, so a 201 is never
# returned for a row that later failed to commit.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]


# Declares the bearer scheme in OpenAPI; the dependencies below read the raw header themselves so
# that they can tell a missing key (auth_missing) from a malformed one (auth_invalid).
bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <api key>")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
AuthorizationHeader = Annotated[str | None, Header(include_in_schema=False)]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _failures_bucket(request: Request) -> str:
    return f"auth-failures:{client_address(request)}"


def admit_key(request: Request, authorization: str | None) -> str:
    """The presented API key, once its rate budgets allow a lookup; 401 for a missing or malformed one.

    Both budgets are checked before the key lookup, so a client past them costs no DB query (issue
    13): one per presented key (valid or not, keyed by its hash), and one per client address for
    failed lookups, which a client rotating made-up keys runs out of. In memory: no I/O.
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
    limiter: RateLimiter = request.app.state.rate_limiter
    # First, so that a client rotating made-up keys stops creating a bucket per key once it is out.
    limiter.ensure_available(_failures_bucket(request), what="failed authentications from this client")
    limiter.check(f"key:{hash_api_key(key)}")
    return key


def unknown_key(request: Request) -> SafetuneError:
    """Charge the client's failed-lookup budget; the 401 to raise for an unknown or revoked key."""
    limiter: RateLimiter = request.app.state.rate_limiter
    limiter.check(_failures_bucket(request), what="failed authentications from this client")
    return SafetuneError(ErrorCode.AUTH_INVALID, "invalid or revoked API key", param="Authorization")


def get_tenant(
    request: Request, session: SessionDep, _credentials: BearerDep, authorization: AuthorizationHeader = None
) -> Tenant:
    """Authorization: Bearer <key> → the key's tenant; 401 for missing, unknown or revoked keys."""
    tenant = tenants_repo.authenticate(session, admit_key(request, authorization))
    if tenant is None:
        raise unknown_key(request)
    return tenant


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


def owned_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """The tenant's job ``job_id``, or 404 job_not_found (also for another tenant's job)."""
    cleaned = clean_id(job_id)
    job = jobs_repo.get_job_for_tenant(session, tenant_id, cleaned) if cleaned else None
    if job is None:
        raise job_not_found(job_id)
    return job


def _owned(request: Request, found: KeyAndJob[J] | None, job_id: str) -> J:
    """401 for an unknown or revoked key, before 404 for a job that is missing or not the tenant's."""
    if found is None:
        raise unknown_key(request)
    if found.job is None:
        raise job_not_found(job_id)
    return found.job


def find_owned_job(session: Session, request: Request, authorization: str | None, job_id: str) -> Job:
    """The key's tenant's job ``job_id``: key, tenant and job in one query."""
    key = admit_key(request, authorization)
    return _owned(request, tenants_repo.authenticate_for_job(session, key, clean_id(job_id)), job_id)


def get_owned_job(
    request: Request,
    session: SessionDep,
    _credentials: BearerDep,
    job_id: Annotated[str, Path()],
    authorization: AuthorizationHeader = None,
) -> Job:
    """The job in the request's unit of work, for routes that read more or change it."""
    return find_owned_job(session, request, authorization, job_id)


OwnedJobDep = Annotated[Job, Depends(get_owned_job)]


def get_owned_job_row(
    request: Request,
    _credentials: BearerDep,
    job_id: Annotated[str, Path()],
    authorization: AuthorizationHeader = None,
) -> JobRow:
    """The job as one autocommit Core read (safetune.db.read_connection), for routes that only
    render it: one threadpool hop and one round trip to Postgres are the whole of its I/O."""
    key = admit_key(request, authorization)
    with read_connection() as connection:
        found = tenants_repo.authenticate_for_job_row(connection, key, clean_id(job_id))
    return _owned(request, found, job_id)


OwnedJobRowDep = Annotated[JobRow, Depends(get_owned_job_row)]
