"""Webhooks end to end: a real worker drains the outbox and POSTs signed events to a real receiver."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai.types.webhooks import FineTuningJobCancelledWebhookEvent, FineTuningJobSucceededWebhookEvent
from sqlalchemy import select

from safetune.config import get_settings
from safetune.db import session_scope
from safetune.models import WebhookDelivery
from tests.integration.conftest import LOCAL_RECEIVERS, wait_for
from tests.integration.test_training_jobs import TERMINAL, job, submit, tiny_spec
from tests.safetune.test_webhooks import Receiver

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def local_receivers_allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The API checks webhook_url at submission; the worker (worker_env) allows the same hosts."""
    monkeypatch.setenv("SAFETUNE_WEBHOOK_ALLOWED_HOSTS", LOCAL_RECEIVERS)
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("SAFETUNE_WEBHOOK_ALLOWED_HOSTS")
    get_settings.cache_clear()


@pytest.fixture
def secret(client: TestClient, auth_headers: dict[str, str]) -> str:
    return str(client.get("/webhook-secret", headers=auth_headers).json()["secret"])


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.close()


def deliveries(job_id: str) -> list[tuple[int, int | None, bool, str]]:
    with session_scope() as session:
        rows = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.id)
        ).all()
        return [(r.attempt, r.status_code, r.delivered, r.event_type) for r in rows]


def test_succeeded_job_event_is_signed_retried_after_a_500_and_recorded(
    client: TestClient,
    auth_headers: dict[str, str],
    start_worker: Any,
    secret: str,
    receivers: list[Receiver],
) -> None:
    receiver = Receiver([500])  # first attempt fails, the retry succeeds
    receivers.append(receiver)
    worker = start_worker(
        SAFETUNE_WEBHOOK_BACKOFF_SECONDS="0.5",
        SAFETUNE_WEBHOOK_MAX_ATTEMPTS="3",
        SAFETUNE_WEBHOOK_POLL_SECONDS="0.2",
    )
    job_id = submit(client, auth_headers, tiny_spec(webhook_url=receiver.url))
    final = wait_for(lambda: job(client, auth_headers, job_id), lambda j: j["status"] in TERMINAL, 240, "job")
    assert final["status"] == "succeeded", (final["error"], worker.log())
    wait_for(lambda: {"rows": deliveries(job_id)}, lambda d: len(d["rows"]) == 2, 30, "2 delivery rows")

    first, second = receiver.events(secret)  # verified by the official openai SDK
    assert isinstance(second, FineTuningJobSucceededWebhookEvent), worker.log()
    assert first.id == second.id and first.id.startswith("evt_")  # the same event, retried
    assert second.data.id == job_id and abs(second.created_at - time.time()) < 300
    assert receiver.requests[1]["at"] - receiver.requests[0]["at"] >= 0.5  # backoff
    assert deliveries(job_id) == [
        (1, 500, False, "fine_tuning.job.succeeded"),
        (2, 200, True, "fine_tuning.job.succeeded"),
    ]


def test_api_side_cancel_is_announced_even_with_no_worker_running_at_the_time(
    client: TestClient,
    auth_headers: dict[str, str],
    start_worker: Any,
    secret: str,
    receivers: list[Receiver],
) -> None:
    """The API writes the event into the outbox with the cancel; a worker started later sends it."""
    receiver = Receiver([])
    receivers.append(receiver)
    job_id = submit(client, auth_headers, tiny_spec(webhook_url=receiver.url))
    assert client.post(f"/jobs/{job_id}/cancel", headers=auth_headers).status_code == 200
    time.sleep(1)
    assert receiver.requests == []  # nobody to send it yet, and nothing lost
    start_worker(SAFETUNE_WEBHOOK_POLL_SECONDS="0.2")
    wait_for(lambda: {"n": len(receiver.requests)}, lambda d: d["n"] == 1, 30, "cancel webhook")
    [event] = receiver.events(secret)
    assert isinstance(event, FineTuningJobCancelledWebhookEvent) and event.data.id == job_id
    wait_for(lambda: {"rows": deliveries(job_id)}, lambda d: len(d["rows"]) == 1, 10, "delivery row")
    assert deliveries(job_id) == [(1, 200, True, "fine_tuning.job.cancelled")]
