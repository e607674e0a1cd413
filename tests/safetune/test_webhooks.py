"""Webhook signatures (Stripe scheme) and the retrying sender, against a real local HTTP receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from safetune.config import get_settings
from safetune.repositories.webhooks import TerminalJob
from safetune.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, build_event, deliver, sign, verify_signature

SECRET = "whsec-test"
BODY = b'{"id":"evt-1","type":"fine_tuning.job.succeeded"}'


def test_signature_round_trip() -> None:
    now = int(time.time())
    header = sign(SECRET, BODY, now)
    assert header.startswith(f"t={now},v1=")
    assert verify_signature(SECRET, header, BODY, tolerance=300)


def test_tampered_body_wrong_secret_and_garbage_are_rejected() -> None:
    header = sign(SECRET, BODY, int(time.time()))
    assert not verify_signature(SECRET, header, BODY.replace(b"succeeded", b"failed"))
    assert not verify_signature("other-secret", header, BODY)
    assert not verify_signature(SECRET, header.replace("v1=", "v0="), BODY)
    assert not verify_signature(SECRET, "", BODY)
    assert not verify_signature(SECRET, "t=abc,v1=00", BODY)


@pytest.mark.parametrize("stamp", ["²", "١٧٠٠٠٠٠٠٠٠", "9" * 400, "9" * 5000, "-5", "+5", " 5"])
def test_a_timestamp_that_is_not_a_short_ascii_number_is_rejected_without_raising(stamp: str) -> None:
    """'t=²' raised ValueError out of verify_signature (str.isdigit() accepts it; int() does not)."""
    signature = sign(SECRET, BODY, int(time.time())).split(",", 1)[1]
    assert verify_signature(SECRET, f"t={stamp},{signature}", BODY) is False


def test_old_or_future_timestamp_is_rejected() -> None:
    now = time.time()
    old = sign(SECRET, BODY, int(now) - 301)
    assert not verify_signature(SECRET, old, BODY, tolerance=300, now=now)
    assert verify_signature(SECRET, old, BODY, tolerance=400, now=now)
    future = sign(SECRET, BODY, int(now) + 600)
    assert not verify_signature(SECRET, future, BODY, tolerance=300, now=now)


def test_any_listed_signature_may_match_during_rotation() -> None:
    t = int(time.time())
    header = sign("old-secret", BODY, t) + "," + sign(SECRET, BODY, t).split(",")[1]
    assert verify_signature(SECRET, header, BODY)
    assert verify_signature("old-secret", header, BODY)


def test_event_payload_shape() -> None:
    job = TerminalJob("ftjob-1", "failed", "http://x", SECRET, "training_failed", "boom", None)
    event = build_event(job, created_at=123)
    assert event["type"] == "fine_tuning.job.failed"
    assert event["id"].startswith("evt-") and event["id"] == build_event(job)["id"]  # stable across retries
    assert event["data"] == {
        "id": "ftjob-1",
        "object": "fine_tuning.job",
        "status": "failed",
        "error": {"code": "training_failed", "message": "boom"},
        "verdict": None,
    }


class Receiver:
    """A real HTTP server on 127.0.0.1 that verifies each request and answers with scripted codes."""

    def __init__(self, codes: list[int], secret: str = SECRET) -> None:
        self.codes = codes
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append(
                    {
                        "body": body,
                        "valid": verify_signature(secret, self.headers[SIGNATURE_HEADER], body),
                        "event_id": self.headers[EVENT_ID_HEADER],
                        "host": self.headers["host"],
                        "at": time.monotonic(),
                    }
                )
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def allow_hosts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """allow_hosts("127.0.0.1, localhost"): set SAFETUNE_WEBHOOK_ALLOWED_HOSTS for this test."""

    def allow(value: str) -> None:
        monkeypatch.setenv("SAFETUNE_WEBHOOK_ALLOWED_HOSTS", value)
        get_settings.cache_clear()

    yield allow
    monkeypatch.delenv("SAFETUNE_WEBHOOK_ALLOWED_HOSTS", raising=False)
    get_settings.cache_clear()


@pytest.fixture
def receiver_factory(allow_hosts: Any) -> Iterator[Any]:
    """Local receivers, which the webhook sender only reaches when 127.0.0.1 is explicitly allowed."""
    allow_hosts("127.0.0.1")
    made: list[Receiver] = []

    def make(codes: list[int]) -> Receiver:
        made.append(Receiver(codes))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_deliver_retries_with_backoff_until_success(receiver_factory: Any) -> None:
    receiver = receiver_factory([500, 503])
    attempts: list[tuple[int, int | None, str | None, bool]] = []
    event = {"id": "evt-42", "type": "fine_tuning.job.succeeded", "data": {}}
    start = time.monotonic()
    ok = deliver(
        receiver.url,
        SECRET,
        event,
        max_attempts=5,
        backoff_seconds=0.05,
        timeout=2,
        record=lambda *a: attempts.append(a),
    )
    assert ok
    assert time.monotonic() - start >= 0.05 + 0.1  # slept 0.05 then 0.1
    assert attempts == [(1, 500, "HTTP 500", False), (2, 503, "HTTP 503", False), (3, 200, None, True)]
    assert [r["valid"] for r in receiver.requests] == [True, True, True]
    assert {r["event_id"] for r in receiver.requests} == {"evt-42"}
    assert json.loads(receiver.requests[-1]["body"]) == event


Attempt = tuple[int, int | None, str | None, bool]


def deliver_now(url: str, event_id: str, max_attempts: int, timeout: float = 2) -> tuple[bool, list[Attempt]]:
    """deliver() without backoff; returns (delivered, the recorded attempts)."""
    attempts: list[Attempt] = []
    ok = deliver(
        url,
        SECRET,
        {"id": event_id},
        max_attempts=max_attempts,
        backoff_seconds=0,
        timeout=timeout,
        record=lambda *a: attempts.append(a),
    )
    return ok, attempts


def test_delivery_to_an_address_that_is_not_allowed_is_refused_without_a_request(
    receiver_factory: Any, allow_hosts: Any
) -> None:
    receiver = receiver_factory([])
    allow_hosts("")  # accepted at submission once, but the setting (or the DNS answer) changed since
    ok, attempts = deliver_now(receiver.url, "evt-1", max_attempts=3)
    assert not ok
    assert receiver.requests == []
    assert len(attempts) == 1  # a refused host is not retried
    assert attempts[0][:2] == (1, None) and "not a public address" in (attempts[0][2] or "")


def test_delivery_connects_to_the_checked_address_with_the_original_host(
    receiver_factory: Any, allow_hosts: Any
) -> None:
    receiver = receiver_factory([])
    allow_hosts("localhost")
    ok, _ = deliver_now(receiver.url.replace("127.0.0.1", "localhost"), "evt-2", max_attempts=1)
    assert ok
    port = receiver.server.server_address[1]
    assert [r["host"] for r in receiver.requests] == [f"localhost:{port}"]
    assert receiver.requests[0]["valid"]


def test_deliver_gives_up_after_max_attempts_and_records_connection_errors(allow_hosts: Any) -> None:
    allow_hosts("127.0.0.1")
    ok, attempts = deliver_now("http://127.0.0.1:9/unreachable", "evt-1", max_attempts=2, timeout=1)
    assert not ok
    assert [(a[0], a[1], a[3]) for a in attempts] == [(1, None, False), (2, None, False)]
    assert all(a[2] and "Connect" in a[2] for a in attempts)
