"""Job webhooks: an outbox drained by the workers, signed the way OpenAI signs its webhooks.

A terminal transition calls :func:`announce` inside its transaction, which adds an event to the
outbox (`webhook_outbox`) in that same transaction: the event exists exactly when the status change
committed, and survives any crash after it. Worker dispatchers (worker.webhook_dispatcher) call
:func:`deliver_due`, which claims due events, POSTs each once and records the attempt in
`webhook_deliveries`; a failed attempt is retried after backoff * 2**(n-1) seconds until
`webhook_max_attempts`. Delivery is therefore at least once: a dispatcher that dies after the POST
but before recording it sends the event again once its claim's lease runs out.

Signature: the Standard Webhooks scheme, which OpenAI uses, so `openai.OpenAI().webhooks.unwrap(body,
headers, secret=...)` or the `standardwebhooks` package verify our events::

    webhook-id: evt_…                  (the event id, the same on every retry: de-duplicate on it)
    webhook-timestamp: <unix seconds>  (of this attempt)
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<raw body>")>

where ``key`` is the base64-decoded part of the tenant's secret ``whsec_<base64>`` (GET
/webhook-secret). The body is OpenAI's event shape: ``{"id": "evt_…", "object": "event", "type":
"fine_tuning.job.succeeded", "created_at": <unix>, "data": {"id": "<job id>"}}``; the receiver reads
the job for its status, error and safety verdict.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.orm import Session

from safetune.config import get_settings
from safetune.db import on_commit, session_scope
from safetune.models import utcnow
from safetune.repositories import webhooks as webhooks_repo
from safetune.security import WEBHOOK_SECRET_PREFIX
from safetune.webhook_targets import WebhookHostUnresolved, WebhookTargetRejected, check_webhook_url

log = logging.getLogger("safetune.webhooks")

EVENT_TYPES = {
    "succeeded": "fine_tuning.job.succeeded",
    "failed": "fine_tuning.job.failed",
    "cancelled": "fine_tuning.job.cancelled",
}
# A claim outlives one attempt (connect + response within the timeout) by this much before the
# event is due again; only a dispatcher that died mid-attempt ever waits it out.
LEASE_MARGIN_SECONDS = 60.0

# Set after a commit that queued an event: a dispatcher in this process (embedded mode) sends it at
# once instead of at its next poll. Dispatchers in other processes poll.
_events_queued = threading.Event()


def announce(session: Session, job_id: str, status: str) -> None:
    """Call inside the transaction that made ``job_id`` terminal with ``status``."""
    if webhooks_repo.add_event(session, job_id, EVENT_TYPES[status]) is not None:
        on_commit(session, _events_queued.set)


def wait_for_events(timeout: float) -> None:
    """Sleep until this process queues an event or ``timeout`` passes (the dispatcher's idle wait)."""
    _events_queued.wait(timeout)
    _events_queued.clear()


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (any other string is used as its UTF-8 bytes)."""
    if secret.startswith(WEBHOOK_SECRET_PREFIX):
        return base64.b64decode(secret[len(WEBHOOK_SECRET_PREFIX) :])
    return secret.encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for ``body``."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(signing_key(secret), signed, hashlib.sha256).digest()).decode()


def build_event(event: webhooks_repo.DueEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "object": "event",
        "type": event.type,
        "created_at": int(event.created_at.timestamp()),
        "data": {"id": event.job_id},
    }


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    error: str | None  # None: delivered (a 2xx)
    refused: bool = False  # the target is not allowed: retrying cannot help


def send(client: httpx.Client, url: str, secret: str, webhook_id: str, body: bytes) -> Attempt:
    """POST ``body`` once. The host is resolved and checked again (safetune.webhook_targets) and the
    request goes to the address it checked, so a DNS answer that changed since submission cannot
    point it at an internal service."""
    try:
        target = check_webhook_url(url)
        timestamp = int(time.time())
        response = client.post(
            target.pinned_url(),
            content=body,
            headers={
                "host": target.host_header,
                "content-type": "application/json",
                "user-agent": "safetune-webhooks/2",
                "webhook-id": webhook_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(secret, webhook_id, timestamp, body),
            },
            # TLS is negotiated and verified for the host name, not the pinned address.
            extensions={"sni_hostname": target.host},
        )
    except WebhookTargetRejected as exc:
        # DNS may come back; a policy will not.
        return Attempt(None, f"refused: {exc}"[:1000], refused=not isinstance(exc, WebhookHostUnresolved))
    except httpx.HTTPError as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:1000])
    error = None if response.is_success else f"HTTP {response.status_code}"
    return Attempt(response.status_code, error)


def deliver_due(limit: int = 20) -> int:
    """Claim the due events, attempt each once and record the outcome. Returns how many were tried."""
    settings = get_settings()
    lease = timedelta(seconds=settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS)
    with session_scope() as session:
        due = webhooks_repo.claim_due(session, lease=lease, limit=limit)
    if not due:
        return 0
    with httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False) as client:
        for event in due:
            body = json.dumps(build_event(event), separators=(",", ":")).encode()
            attempt = send(client, event.url, event.secret, event.id, body)
            last = attempt.refused or event.attempt >= settings.webhook_max_attempts
            backoff = settings.webhook_backoff_seconds * 2 ** (event.attempt - 1)
            with session_scope() as session:
                webhooks_repo.record_attempt(
                    session,
                    event,
                    status_code=attempt.status_code,
                    error=attempt.error,
                    retry_at=None if last else utcnow() + timedelta(seconds=backoff),
                )
            log.info(
                "webhook attempt",
                extra={
                    "job_id": event.job_id,
                    "event_id": event.id,
                    "attempt": event.attempt,
                    "status_code": attempt.status_code,
                    "delivered": attempt.error is None,
                },
            )
    return len(due)
