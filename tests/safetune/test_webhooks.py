"""Job webhooks: the outbox (written with the status change, drained at least once), Standard
Webhooks signatures checked by the official openai SDK, and the SSRF check at every delivery. Real
Postgres and a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
from openai.types.webhooks import FineTuningJobFailedWebhookEvent
from sqlalchemy import select

from safetune import webhooks
from safetune.config import get_settings
from safetune.datasets import DatasetLimits, parse_dataset
from safetune.db import session_scope
from safetune.errors import ErrorCode
from safetune.models import WebhookDelivery, WebhookOutboxEvent
from safetune.repositories import files as files_repo
from safetune.repositories import job_runs
from safetune.repositories import jobs as jobs_repo
from safetune.repositories import tenants as tenants_repo
from safetune.repositories import webhooks as webhooks_repo
from safetune.schemas import JobSpec
from safetune.security import generate_webhook_secret

SDK = openai.OpenAI(api_key="sk-unused", base_url="http://127.0.0.1:9/")  # never sends a request


def verified(secret: str, body: bytes, headers: dict[str, str]) -> Any:
    """The event as the official openai SDK parses it, or None when it rejects the signature."""
    try:
        return SDK.webhooks.unwrap(body, headers, secret=secret)
    except openai.InvalidWebhookSignatureError:
        return None


def test_a_signed_event_is_verified_and_parsed_by_the_openai_sdk() -> None:
    secret = generate_webhook_secret()
    body = json.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "type": "fine_tuning.job.failed",
            "created_at": 1,
            "data": {"id": "ftjob-1"},
        }
    ).encode()
    now = int(time.time())
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(now),
        "webhook-signature": webhooks.sign(secret, "evt_1", now, body),
    }
    event = verified(secret, body, headers)
    assert isinstance(event, FineTuningJobFailedWebhookEvent) and event.data.id == "ftjob-1"
    assert verified(secret, body.replace(b"failed", b"succeeded"), headers) is None  # body tampered
    assert verified(generate_webhook_secret(), body, headers) is None  # another tenant's secret
    assert verified(secret, body, {**headers, "webhook-id": "evt_2"}) is None  # id is signed too


class Receiver:
    """A real HTTP server on 127.0.0.1 that answers with scripted codes and keeps what it got."""

    def __init__(self, codes: list[int]) -> None:
        self.codes = codes
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.requests.append({"body": body, "headers": headers, "at": time.monotonic()})
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, secret: str) -> list[Any]:
        """Each request as the openai SDK verifies and parses it (None for a bad signature)."""
        return [verified(secret, r["body"], r["headers"]) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def configure(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """configure(WEBHOOK_ALLOWED_HOSTS="127.0.0.1", ...): SAFETUNE_* settings for this test."""

    def apply(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(f"SAFETUNE_{key}", value)
        get_settings.cache_clear()

    apply(WEBHOOK_ALLOWED_HOSTS="127.0.0.1", WEBHOOK_BACKOFF_SECONDS="0")
    yield apply
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def receiver_factory(configure: Any) -> Iterator[Callable[[list[int]], Receiver]]:
    made: list[Receiver] = []

    def make(codes: list[int]) -> Receiver:
        made.append(Receiver(codes))
        return made[-1]

    yield make
    for r in made:
        r.close()


def running_job(webhook_url: str | None) -> tuple[str, str]:
    """A committed running job of a fresh tenant: (job id, the tenant's webhook secret)."""
    with session_scope() as session:
        tenant = tenants_repo.create_tenant(session, f"hooks-{uuid.uuid4().hex[:10]}")
        stored = files_repo.create_file(
            session,
            tenant.id,
            purpose="training",
            filename="t.jsonl",
            dataset=parse_dataset(
                b'{"prompt": "p", "completion": "c"}\n', "training", DatasetLimits(10_000, 10, 1000)
            ),
        )
        spec = JobSpec.model_validate(
            {"base_model": "tiny-random-llama", "guard": "none", "webhook_url": webhook_url}
        )
        job_id = jobs_repo.create_job(session, tenant.id, spec, training_file_id=stored.id).id
        assert job_runs.claim_job(session, job_id, "test-worker")
        return job_id, tenant.webhook_secret


def fail(job_id: str) -> None:
    with session_scope() as session:
        assert job_runs.mark_failed(session, job_id, ErrorCode.TRAINING_FAILED, "boom")


def outbox(job_id: str) -> list[WebhookOutboxEvent]:
    with session_scope() as session:
        rows = session.scalars(select(WebhookOutboxEvent).where(WebhookOutboxEvent.job_id == job_id)).all()
        session.expunge_all()
        return list(rows)


def deliveries(job_id: str) -> list[tuple[int, int | None, bool, str | None]]:
    with session_scope() as session:
        rows = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.id)
        ).all()
        return [(r.attempt, r.status_code, r.delivered, r.event_id) for r in rows]


def drain(until: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not until():
        assert time.monotonic() < deadline, "outbox not drained in time"
        webhooks.deliver_due()
        time.sleep(0.02)


def test_the_event_is_written_with_the_status_change_and_not_without_it(configure: Any) -> None:
    job_id, _ = running_job("http://127.0.0.1:9/hook")
    with pytest.raises(RuntimeError), session_scope() as session:
        job_runs.mark_failed(session, job_id, ErrorCode.TRAINING_FAILED, "boom")
        assert len(session.scalars(select(WebhookOutboxEvent)).all()) >= 1  # same transaction
        raise RuntimeError("the transition rolls back")
    assert outbox(job_id) == []  # a rolled-back transition is never announced
    fail(job_id)
    [event] = outbox(job_id)
    assert event.id.startswith("evt_") and event.type == "fine_tuning.job.failed"
    assert event.next_attempt_at is not None and event.attempts == 0


def test_a_job_without_webhook_url_queues_nothing(configure: Any) -> None:
    job_id, _ = running_job(None)
    fail(job_id)
    assert outbox(job_id) == []


def test_retries_with_backoff_until_a_2xx_and_every_attempt_is_recorded(
    configure: Any, receiver_factory: Any
) -> None:
    configure(WEBHOOK_BACKOFF_SECONDS="0.3", WEBHOOK_MAX_ATTEMPTS="5")
    receiver = receiver_factory([500, 503])
    job_id, secret = running_job(receiver.url)
    fail(job_id)
    [event] = outbox(job_id)

    webhooks.deliver_due()
    assert len(receiver.requests) == 1
    webhooks.deliver_due()  # the retry is not due yet
    assert len(receiver.requests) == 1
    drain(lambda: len(receiver.requests) == 3)

    assert deliveries(job_id) == [
        (1, 500, False, event.id),
        (2, 503, False, event.id),
        (3, 200, True, event.id),
    ]
    gaps = [b["at"] - a["at"] for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6  # backoff * 2**(n-1)
    parsed = receiver.events(secret)
    assert all(isinstance(e, FineTuningJobFailedWebhookEvent) for e in parsed)
    assert {e.id for e in parsed} == {event.id} and {e.data.id for e in parsed} == {job_id}
    assert {r["headers"]["webhook-id"] for r in receiver.requests} == {event.id}  # de-duplicate on it
    assert json.loads(receiver.requests[-1]["body"]) == {
        "id": event.id,
        "object": "event",
        "type": "fine_tuning.job.failed",
        "created_at": int(event.created_at.timestamp()),
        "data": {"id": job_id},
    }
    [done] = outbox(job_id)
    assert done.delivered_at is not None and done.next_attempt_at is None
    webhooks.deliver_due()
    assert len(receiver.requests) == 3  # delivered events are never sent again


def test_gives_up_after_max_attempts(configure: Any) -> None:
    configure(WEBHOOK_MAX_ATTEMPTS="2", WEBHOOK_TIMEOUT_SECONDS="1")
    job_id, _ = running_job("http://127.0.0.1:9/unreachable")
    fail(job_id)
    drain(lambda: len(deliveries(job_id)) == 2)
    webhooks.deliver_due()
    assert [(a, code, ok) for a, code, ok, _ in deliveries(job_id)] == [(1, None, False), (2, None, False)]
    [event] = outbox(job_id)
    assert event.next_attempt_at is None and event.delivered_at is None
    assert event.last_error and "Connect" in event.last_error


def test_an_attempt_that_died_before_recording_is_sent_again_after_its_lease(
    configure: Any, receiver_factory: Any
) -> None:
    """At least once: a dispatcher killed between the POST and the record loses nothing."""
    receiver = receiver_factory([])
    job_id, secret = running_job(receiver.url)
    fail(job_id)
    with session_scope() as session:
        [claimed] = webhooks_repo.claim_due(session, lease=timedelta(seconds=0.5))
    with session_scope() as session:  # a second dispatcher: the claim holds it back
        assert webhooks_repo.claim_due(session, lease=timedelta(seconds=0.5)) == []
    webhooks.deliver_due()
    assert receiver.requests == []
    time.sleep(0.6)
    webhooks.deliver_due()
    assert [e.data.id for e in receiver.events(secret)] == [job_id]
    assert deliveries(job_id) == [(2, 200, True, claimed.id)]  # the lost first attempt still counted


def test_a_target_no_longer_allowed_is_refused_without_a_request_and_not_retried(
    configure: Any, receiver_factory: Any
) -> None:
    receiver = receiver_factory([])
    job_id, _ = running_job(receiver.url)  # allowed at submission
    fail(job_id)
    configure(WEBHOOK_ALLOWED_HOSTS="")  # the setting (or the DNS answer) changed since
    webhooks.deliver_due()
    webhooks.deliver_due()
    assert receiver.requests == []
    [(attempt, code, ok, _)] = deliveries(job_id)
    assert (attempt, code, ok) == (1, None, False)
    [event] = outbox(job_id)
    assert event.next_attempt_at is None and "not a public address" in (event.last_error or "")


def test_delivery_connects_to_the_checked_address_with_the_original_host(
    configure: Any, receiver_factory: Any
) -> None:
    receiver = receiver_factory([])
    configure(WEBHOOK_ALLOWED_HOSTS="localhost")
    job_id, secret = running_job(receiver.url.replace("127.0.0.1", "localhost"))
    fail(job_id)
    webhooks.deliver_due()
    port = receiver.server.server_address[1]
    assert [r["headers"]["host"] for r in receiver.requests] == [f"localhost:{port}"]
    assert [e.data.id for e in receiver.events(secret)] == [job_id]


def test_a_job_deleted_during_an_attempt_takes_its_event_and_the_record_is_skipped(
    configure: Any,
) -> None:
    """DELETE /jobs/{id} cascades the job's outbox rows away; a dispatcher that claimed one before
    records nothing (it used to insert a delivery for the deleted job: a foreign-key error that
    cost the rest of its batch this round)."""
    job_id, _ = running_job("http://127.0.0.1:9/hook")
    fail(job_id)
    with session_scope() as session:
        [claimed] = webhooks_repo.claim_due(session, lease=timedelta(seconds=30))
    with session_scope() as session:
        job = jobs_repo.get_job(session, job_id)
        assert job is not None
        jobs_repo.delete_finished_job(session, job)
    with session_scope() as session:
        webhooks_repo.record_attempt(session, claimed, status_code=200, error=None, retry_at=None)
    assert outbox(job_id) == [] and deliveries(job_id) == []
