"""Webhooks end to end: a real worker finishes a job and POSTs a signed event to a real receiver."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from safetune.config import get_settings
from safetune.db import session_scope
from safetune.repositories import webhooks as webhooks_repo
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
        rows = webhooks_repo.list_deliveries(session, job_id)
        return [(r.attempt, r.status_code, r.delivered, r.event_type) for r in rows]


def test_succeeded_job_event_is_signed_retried_after_a_500_and_recorded(
    client: TestClient,
    auth_headers: dict[str, str],
    start_worker: Any,
    secret: str,
    receivers: list[Receiver],
) -> None:
    receiver = Receiver([500], secret=secret)  # first attempt fails, the retry succeeds
    receivers.append(receiver)
    worker = start_worker(SAFETUNE_WEBHOOK_BACKOFF_SECONDS="0.5", SAFETUNE_WEBHOOK_MAX_ATTEMPTS="3")
    job_id = submit(client, auth_headers, tiny_spec(webhook_url=receiver.url))
    final = wait_for(lambda: job(client, auth_headers, job_id), lambda j: j["status"] in TERMINAL, 240, "job")
    assert final["status"] == "succeeded", (final["error"], worker.log())
    wait_for(lambda: {"rows": deliveries(job_id)}, lambda d: len(d["rows"]) == 2, 30, "2 delivery rows")

    assert [r["valid"] for r in receiver.requests] == [True, True]
    assert receiver.requests[1]["at"] - receiver.requests[0]["at"] >= 0.5  # backoff
    assert receiver.requests[0]["event_id"] == receiver.requests[1]["event_id"]  # same event, retried
    event = json.loads(receiver.requests[1]["body"])
    verdict = client.get(f"/jobs/{job_id}/safety-report", headers=auth_headers).json()["verdict"]
    assert event["type"] == "fine_tuning.job.succeeded" and event["id"] == receiver.requests[1]["event_id"]
    assert event["data"] == {
        "id": job_id,
        "object": "fine_tuning.job",
        "status": "succeeded",
        "error": None,
        "verdict": verdict,
    }
    assert abs(event["created_at"] - time.time()) < 300
    assert deliveries(job_id) == [
        (1, 500, False, "fine_tuning.job.succeeded"),
        (2, 200, True, "fine_tuning.job.succeeded"),
    ]


def test_api_side_cancel_of_a_queued_job_sends_the_cancelled_event(
    client: TestClient, auth_headers: dict[str, str], secret: str, receivers: list[Receiver]
) -> None:
    receiver = Receiver([], secret=secret)
    receivers.append(receiver)
    # No worker runs: the job stays queued and the API process itself cancels and notifies.
    job_id = submit(client, auth_headers, tiny_spec(webhook_url=receiver.url))
    assert client.post(f"/jobs/{job_id}/cancel", headers=auth_headers).status_code == 200
    wait_for(lambda: {"n": len(receiver.requests)}, lambda d: d["n"] == 1, 15, "cancel webhook")
    event = json.loads(receiver.requests[0]["body"])
    assert receiver.requests[0]["valid"]
    assert (event["type"], event["data"]["status"], event["data"]["id"]) == (
        "fine_tuning.job.cancelled",
        "cancelled",
        job_id,
    )
    wait_for(lambda: {"rows": deliveries(job_id)}, lambda d: len(d["rows"]) == 1, 10, "delivery row")
    assert deliveries(job_id) == [(1, 200, True, "fine_tuning.job.cancelled")]
