"""GET /jobs/{job_id}/safety-report.html and POST /jobs/{job_id}/report-links (signed page URLs).

A browser cannot send the Bearer header when a user opens a link, so an authenticated client mints a
short-lived URL: ``?token=<tenant_id>.<expires unix>.<hex HMAC>``. The HMAC key is derived from a
server secret (never shown to anyone, `safetune.repositories.server_secrets`) and the tenant id: no
API key, tenant or webhook receiver can mint or extend a link, and `safetune keys
rotate-link-secret` revokes every outstanding one. The token names one job and expires; it grants
nothing else. The server enforces the expiry, and refuses any token that would outlive
SAFETUNE_REPORT_LINK_MAX_SECONDS from now (lowering the maximum shortens outstanding links too).
The token path is rate-limited per client address, since it skips the per-key limiter.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel

from api.deps import SessionDep, SettingsDep, TenantDep, client_address, find_owned_job, owned_job
from api.errors import error_responses
from api.report_html import CONTENT_SECURITY_POLICY, render_report_page
from api.routes.reports import ready_report
from safetune.config import Settings
from safetune.errors import ErrorCode, SafetuneError
from safetune.models import Job
from safetune.repositories import jobs as jobs_repo
from safetune.repositories import server_secrets
from safetune.repositories import tenants as tenants_repo
from safetune.security import RateLimiter

router = APIRouter(prefix="/jobs", tags=["reports"])

LINK_KEY_CONTEXT = b"safetune report link v2"


class ReportLink(BaseModel):
    object: str = "report_link"
    url: str
    expires_at: int


def _link_mac(session: SessionDep, tenant_id: str, job_id: str, expires: int) -> str:
    server_secret = server_secrets.get_secret(session, server_secrets.REPORT_LINK_SECRET)
    # One key per tenant (domain-separated), so a MAC of one tenant never verifies for another.
    key_input = LINK_KEY_CONTEXT + b"\0" + tenant_id.encode()
    key = hmac.new(server_secret.encode(), key_input, hashlib.sha256).digest()
    return hmac.new(key, f"{tenant_id}.{job_id}.{expires}".encode(), hashlib.sha256).hexdigest()


# The only tokens create_report_link mints: tenant id, unix expiry, hex sha256 HMAC. Matching the
# whole shape first keeps NUL (Postgres rejects it), "²" (str.isdigit() accepts it, int() does not)
# and non-ASCII MACs (hmac.compare_digest raises on them) away from the lookup and the comparison.
TOKEN_PATTERN = re.compile(r"([A-Za-z0-9_-]{1,64})\.([0-9]{1,12})\.([0-9a-f]{64})")


def _job_from_token(session: SessionDep, settings: Settings, job_id: str, token: str) -> Job:
    match = TOKEN_PATTERN.fullmatch(token)
    tenant = tenants_repo.get_tenant(session, match[1]) if match else None
    if match is None or tenant is None:
        raise SafetuneError(ErrorCode.AUTH_INVALID, "invalid report link", param="token")
    expires, mac = int(match[2]), match[3]
    if not hmac.compare_digest(_link_mac(session, tenant.id, job_id, expires), mac):
        raise SafetuneError(ErrorCode.AUTH_INVALID, "invalid report link", param="token")
    now = time.time()
    if expires < now:
        raise SafetuneError(ErrorCode.AUTH_INVALID, "report link expired; mint a new one", param="token")
    if expires > now + settings.report_link_max_seconds:
        raise SafetuneError(
            ErrorCode.AUTH_INVALID,
            f"report link outlives the maximum lifetime of {settings.report_link_max_seconds} s",
            param="token",
        )
    return owned_job(session, tenant.id, job_id)


@router.post(
    "/{job_id}/report-links",
    response_model=ReportLink,
    status_code=201,
    responses=error_responses(
        ErrorCode.AUTH_MISSING, ErrorCode.RATE_LIMITED, ErrorCode.JOB_NOT_FOUND, ErrorCode.REQUEST_INVALID
    ),
)
def create_report_link(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    job_id: Annotated[str, Path()],
    expires_in: Annotated[
        int | None,
        Query(ge=60, description="seconds the link works (default 900; at most the server's maximum)"),
    ] = None,
) -> ReportLink:
    """A URL of the HTML safety report that works without the API key for a while (15 minutes)."""
    job = owned_job(session, tenant.id, job_id)
    lifetime = settings.report_link_ttl_seconds if expires_in is None else expires_in
    if lifetime > settings.report_link_max_seconds:
        raise SafetuneError(
            ErrorCode.REQUEST_INVALID,
            f"expires_in is at most {settings.report_link_max_seconds} seconds",
            param="expires_in",
            max_seconds=settings.report_link_max_seconds,
        )
    expires = int(time.time()) + min(lifetime, settings.report_link_max_seconds)
    token = f"{tenant.id}.{expires}.{_link_mac(session, tenant.id, job.id, expires)}"
    url = str(request.url_for("get_safety_report_page", job_id=job.id).include_query_params(token=token))
    return ReportLink(url=url, expires_at=expires)


@router.get(
    "/{job_id}/safety-report.html",
    response_class=Response,
    responses={
        200: {"content": {"text/html": {}}, "description": "the report page"},
        **error_responses(ErrorCode.AUTH_MISSING, ErrorCode.RATE_LIMITED, ErrorCode.JOB_NOT_FOUND),
    },
)
def get_safety_report_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    job_id: Annotated[str, Path()],
    token: Annotated[str | None, Query(max_length=400)] = None,
) -> Response:
    """The safety report as a self-contained HTML page (Bearer key, or ?token= from report-links)."""
    if token is not None:
        limiter: RateLimiter = request.app.state.report_link_limiter
        limiter.check(f"report-link:{client_address(request)}", what="report link requests from this client")
        job = _job_from_token(session, settings, job_id, token)
    else:
        job = find_owned_job(session, request, request.headers.get("authorization"), job_id)
    report = ready_report(session, job)
    events, _ = jobs_repo.list_events(session, job.tenant_id, job.id, limit=10_000)
    train_losses = [
        (int(e.data["step"]), float(e.data["loss"]))
        for e in events
        if e.type == "metrics" and e.data and None not in (e.data.get("step"), e.data.get("loss"))
    ]
    page = render_report_page(
        job_id=job.id,
        base_model=job.base_model,
        guard=job.guard,
        created_at=report.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        if report.created_at
        else datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        report=report.report,
        train_losses=train_losses,
    )
    return Response(
        page,
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            # The URL may carry a link token: keep it out of caches and Referer headers.
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "private, no-store",
        },
    )
