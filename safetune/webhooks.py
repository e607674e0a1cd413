"""Job webhooks: Stripe-style signatures and at-least-once delivery with bounded retries.

A terminal transition calls :func:`notify_on_commit` inside its transaction. Nothing is sent then:
the job id waits in ``session.info`` until the session commits (a rolled-back transition must not be
announced), and only then a background thread loads the job, POSTs the event and records every
attempt in ``webhook_deliveries``. The same code runs in the worker and in the API (queued cancels).

Signature header (the Stripe scheme, so receivers can reuse known verification code)::

    safetune-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(tenant webhook_secret, "<t>.<raw body>")>

The event id is derived from the job id and the status, so every retry of one event carries the same
``safetune-event-id`` and a receiver can de-duplicate.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.orm import Session

from safetune.config import get_settings
from safetune.db import session_scope
from safetune.repositories import webhooks as webhooks_repo
from safetune.webhook_targets import WebhookHostUnresolved, WebhookTargetRejected, check_webhook_url

log = logging.getLogger("safetune.webhooks")

SIGNATURE_HEADER = "safetune-signature"
EVENT_ID_HEADER = "safetune-event-id"
PENDING_KEY = "safetune_webhook_jobs"
EVENT_TYPES = {
    "succeeded": "fine_tuning.job.succeeded",
    "failed": "fine_tuning.job.failed",
    "cancelled": "fine_tuning.job.cancelled",
}

_threads: set[threading.Thread] = set()
_threads_lock = threading.Lock()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``safetune-signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


MAX_TIMESTAMP_DIGITS = 12


def verify_signature(
    secret: str, header: str, body: bytes, tolerance: float = 300.0, *, now: float | None = None
) -> bool:
    """True when ``header`` signs exactly ``body`` with ``secret`` and is at most ``tolerance`` s old.

    The timestamp bound stops replays of a captured request; any ``v1`` entry may match, so a
    sender may list several signatures while a secret is being rotated.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        # ASCII digits only, and few of them: str.isdigit() accepts "²" (int() raises), and a long
        # run of digits makes int() raise or the age arithmetic overflow a float (issue 13).
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= MAX_TIMESTAMP_DIGITS:
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def event_id(job_id: str, status: str) -> str:
    return "evt-" + hashlib.sha256(f"{job_id}:{status}".encode()).hexdigest()[:32]


def build_event(job: webhooks_repo.TerminalJob, created_at: int | None = None) -> dict[str, Any]:
    error = {"code": job.error_code, "message": job.error_message} if job.error_code else None
    return {
        "id": event_id(job.job_id, job.status),
        "object": "event",
        "type": EVENT_TYPES[job.status],
        "created_at": int(time.time()) if created_at is None else created_at,
        "data": {
            "id": job.job_id,
            "object": "fine_tuning.job",
            "status": job.status,
            "error": error,
            "verdict": job.verdict,
        },
    }


Recorder = Callable[[int, int | None, str | None, bool], None]


def deliver(
    url: str,
    secret: str,
    event_body: dict[str, Any],
    *,
    max_attempts: int,
    backoff_seconds: float,
    timeout: float,
    record: Recorder,
) -> bool:
    """POST the event until a 2xx or ``max_attempts`` tries, sleeping backoff * 2**(n-1) between.

    Each attempt resolves and checks the host again (safetune.webhook_targets) and connects to the
    address it checked; a host that is not allowed ends the delivery at once. Each attempt is
    re-signed (fresh timestamp) and reported to ``record(attempt, status, error, delivered)``.
    Returns whether any attempt got a 2xx.
    """
    body = json.dumps(event_body, separators=(",", ":")).encode()
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for attempt in range(1, max_attempts + 1):
            status_code: int | None = None
            error: str | None = None
            refused = False
            try:
                target = check_webhook_url(url)
                response = client.post(
                    target.pinned_url(),
                    content=body,
                    headers={
                        "host": target.host_header,
                        "content-type": "application/json",
                        "user-agent": "safetune-webhooks/1",
                        SIGNATURE_HEADER: sign(secret, body, int(time.time())),
                        EVENT_ID_HEADER: str(event_body["id"]),
                    },
                    # TLS is negotiated and verified for the host name, not the pinned address.
                    extensions={"sni_hostname": target.host},
                )
                status_code = response.status_code
                if not response.is_success:
                    error = f"HTTP {status_code}"
            except WebhookTargetRejected as exc:
                error = f"refused: {exc}"[:1000]
                refused = not isinstance(exc, WebhookHostUnresolved)  # DNS may come back; a policy won't
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:1000]
            delivered = error is None
            record(attempt, status_code, error, delivered)
            if delivered:
                return True
            if refused:
                return False
            if attempt < max_attempts:
                time.sleep(backoff_seconds * 2 ** (attempt - 1))
    return False


def deliver_job_event(job_id: str) -> bool:
    """Load the finished job, send its event and record every attempt. False if nothing delivered."""
    settings = get_settings()
    with session_scope() as session:
        job = webhooks_repo.load_terminal_job(session, job_id)
    if job is None or job.status not in EVENT_TYPES:
        return False
    body = build_event(job)

    def record(attempt: int, status_code: int | None, error: str | None, delivered: bool) -> None:
        with session_scope() as session:
            webhooks_repo.record_delivery(
                session,
                job_id,
                body["type"],
                attempt=attempt,
                status_code=status_code,
                error=error,
                delivered=delivered,
            )
        log.info(
            "webhook attempt",
            extra={"job_id": job_id, "attempt": attempt, "status_code": status_code, "delivered": delivered},
        )

    return deliver(
        job.webhook_url,
        job.secret,
        body,
        max_attempts=settings.webhook_max_attempts,
        backoff_seconds=settings.webhook_backoff_seconds,
        timeout=settings.webhook_timeout_seconds,
        record=record,
    )


def notify_on_commit(session: Session, job_id: str) -> None:
    """Call inside the transaction that made ``job_id`` terminal; delivery starts after commit."""
    if webhooks_repo.webhook_url(session, job_id):
        session.info.setdefault(PENDING_KEY, set()).add(job_id)


def _run(job_id: str) -> None:
    try:
        deliver_job_event(job_id)
    except Exception:  # a webhook problem must never disturb the job or the request that finished it
        log.exception("webhook delivery crashed", extra={"job_id": job_id})
    finally:
        with _threads_lock:
            _threads.discard(threading.current_thread())


@event.listens_for(Session, "after_commit")
def _start_pending(session: Session) -> None:
    for job_id in session.info.pop(PENDING_KEY, ()):
        thread = threading.Thread(target=_run, args=(job_id,), name=f"webhook-{job_id}", daemon=True)
        with _threads_lock:
            _threads.add(thread)
        thread.start()


@event.listens_for(Session, "after_soft_rollback")
def _drop_pending(session: Session, _previous_transaction: Any) -> None:
    session.info.pop(PENDING_KEY, None)


def wait_for_deliveries(timeout: float) -> None:
    """Block until in-flight deliveries finish or ``timeout`` passes (worker shutdown)."""
    deadline = time.monotonic() + timeout
    with _threads_lock:
        pending = list(_threads)
    for thread in pending:
        thread.join(max(0.0, deadline - time.monotonic()))
