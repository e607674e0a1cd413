"""Issue 12, fault 2: a tenant at its concurrent-job limit does not multiply its own queue messages.

A real `celery worker` and its reaper run against the real Redis broker for two minutes while one
tenant (limit: one job) has a running job and five queued ones. Each queued job is delivered once,
finds the tenant busy and waits parked; neither the worker nor the reaper may send it again, so the
broker never holds more than one message per queued job. When the slot frees, one job is woken.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from safetune.db import session_scope
from safetune.errors import ErrorCode
from safetune.queue import TRAIN_TASK, TRAINING_QUEUE
from safetune.repositories import job_runs
from tests.integration.conftest import wait_for
from tests.integration.test_training_jobs import TERMINAL, job, submit, tiny_spec

pytestmark = pytest.mark.integration

WINDOW_SECONDS = 120.0
QUEUED_JOBS = 5


def messages_per_job(broker: redis.Redis, job_ids: set[str]) -> Counter[str]:
    """Train messages per job id, waiting in the queue or delivered and not yet acknowledged
    (Celery's Redis transport keeps those, including delayed ones, in the `unacked` hash)."""
    payloads = [json.loads(raw) for raw in broker.lrange(TRAINING_QUEUE, 0, -1)]
    payloads += [json.loads(raw)[0] for raw in broker.hvals("unacked")]
    counts: Counter[str] = Counter()
    for payload in payloads:
        headers = payload.get("headers", {})
        job_id = str(headers.get("argsrepr", "")).strip("[]()' ,\"")
        if headers.get("task") == TRAIN_TASK and job_id in job_ids:
            counts[job_id] += 1
    return counts


def test_busy_tenant_holds_at_most_one_message_per_queued_job(
    client: TestClient,
    make_tenant: Callable[..., tuple[str, str]],
    start_worker: Callable[..., Any],
    redis_url: str,
) -> None:
    _tenant_id, key = make_tenant(max_concurrent_jobs=1)
    headers = {"Authorization": f"Bearer {key}"}
    spec = tiny_spec(guard="none", hyperparameters={"max_steps": 1, "batch_size": 2, "max_seq_len": 128})
    blocker = submit(client, headers, spec)
    with session_scope() as session:  # the tenant's one slot: a job running on another machine
        assert job_runs.claim_job(session, blocker, "elsewhere:1")
    queued = {submit(client, headers, spec) for _ in range(QUEUED_JOBS)}

    # The reaper ticks every 5 s and looks for lost messages after 5 s: many re-send rounds in the
    # window. The blocker's heartbeat is never refreshed, so it must not be reaped meanwhile.
    worker = start_worker(
        "busy", SAFETUNE_REQUEUE_QUEUED_AFTER_SECONDS="5", SAFETUNE_STALE_AFTER_SECONDS="3600"
    )
    broker = redis.Redis.from_url(redis_url)
    most: Counter[str] = Counter()
    deadline = time.monotonic() + WINDOW_SECONDS
    while time.monotonic() < deadline:
        for job_id, count in messages_per_job(broker, queued).items():
            most[job_id] = max(most[job_id], count)
        time.sleep(1.0)
    assert all(count <= 1 for count in most.values()), (most, worker.log())
    states = {(job(client, headers, j)["status"], job(client, headers, j)["stage"]) for j in queued}
    assert states == {("queued", "waiting_for_slot")}, (states, worker.log())
    assert sum(messages_per_job(broker, queued).values()) == 0  # all delivered, none re-sent

    with session_scope() as session:  # the slot frees: the reaper wakes exactly one job
        assert job_runs.mark_failed(session, blocker, ErrorCode.TRAINING_FAILED, "freed for the test")
    woken = wait_for(
        lambda: {"running": [j for j in queued if job(client, headers, j)["status"] != "queued"]},
        lambda r: len(r["running"]) >= 1,
        60,
        "a parked job to be woken and claimed",
    )["running"]
    assert len(woken) == 1, woken
    for job_id in queued:
        client.post(f"/jobs/{job_id}/cancel", headers=headers)
    for job_id in queued:
        wait_for(lambda j=job_id: job(client, headers, j), lambda j: j["status"] in TERMINAL, 120, "cancel")
    broker.close()
