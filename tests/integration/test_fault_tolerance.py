"""Issue 5: jobs survive dead workers, a restarted broker, duplicate deliveries, shutdowns and a DB blip.

Everything here is a real process: `celery worker` subprocesses (killed with SIGKILL or SIGTERM), the
training child, the Redis server and the Postgres cluster (stopped and started again). Models are
tiny (tiny-random-llama, batch 2, 128 tokens, no guard) so the whole file stays within minutes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from fastapi.testclient import TestClient

from safetune.db import reset_engine, session_scope
from safetune.queue import TRAIN_TASK, TRAINING_QUEUE
from safetune.repositories import job_runs
from tests.integration.conftest import WorkerProcess, wait_for
from tests.integration.test_training_jobs import TERMINAL, events, job, tiny_spec
from tests.integration.test_training_jobs import submit as submit_with

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]

REDIS_PORT = "6379"
REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    REDIS_PORT,
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]


SHORT_CHATS = b"".join(
    json.dumps(
        {
            "messages": [
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
            ]
        }
    ).encode()
    + b"\n"
    for i in range(12)
)


def fault_spec(max_steps: int = 40) -> dict[str, Any]:
    return tiny_spec(
        guard="none",
        hyperparameters={"max_steps": max_steps, "batch_size": 2, "max_seq_len": 128, "checkpoint_every": 2},
        validation_split=0.0,
        evaluation={"max_prompts": 2, "max_new_tokens": 4},
    )


def submit(client: TestClient, headers: dict[str, str], spec: dict[str, Any]) -> str:
    return submit_with(client, headers, spec, SHORT_CHATS)


def kinds(client: TestClient, headers: dict[str, str], job_id: str) -> list[str]:
    return [e["type"] for e in events(client, headers, job_id)]


def messages(client: TestClient, headers: dict[str, str], job_id: str, kind: str) -> list[str]:
    return [e["message"] for e in events(client, headers, job_id) if e["type"] == kind]


def attempt_of(job_id: str) -> int:
    with session_scope() as session:
        return job_runs.load_job(session, job_id).attempt


def wait_terminal(
    client: TestClient, headers: dict[str, str], job_id: str, timeout: float = 240
) -> dict[str, Any]:
    return wait_for(
        lambda: job(client, headers, job_id), lambda j: j["status"] in TERMINAL, timeout, "job to finish"
    )


def wait_checkpointed(client: TestClient, headers: dict[str, str], job_id: str) -> None:
    wait_for(
        lambda: {"kinds": kinds(client, headers, job_id), **job(client, headers, job_id)},
        lambda j: "checkpoint" in j["kinds"] or j["status"] in TERMINAL,
        180,
        "a stored checkpoint",
    )
    current = job(client, headers, job_id)
    assert current["status"] == "running", f"job left running before the fault was injected: {current}"


def resumed_step(client: TestClient, headers: dict[str, str], job_id: str) -> int:
    resumed = messages(client, headers, job_id, "resumed")
    assert len(resumed) == 1, resumed
    match = re.search(r"step (\d+)", resumed[0])
    assert match, resumed
    return int(match.group(1))


def test_kill_9_mid_training_is_reaped_and_resumes_from_its_checkpoint(
    client: TestClient, auth_headers: dict[str, str], start_worker: StartWorker
) -> None:
    first = start_worker("killed")
    job_id = submit(client, auth_headers, fault_spec(max_steps=60))
    wait_checkpointed(client, auth_headers, job_id)

    first.kill_hard()  # worker, pool process and training child: no chance to write anything
    assert job(client, auth_headers, job_id)["status"] == "running"  # the DB only sees silence

    second = start_worker("rescuer", SAFETUNE_STALE_AFTER_SECONDS="6")
    final = wait_terminal(client, auth_headers, job_id)
    assert final["status"] == "succeeded", (final, second.log())
    assert final["step"] == final["total_steps"] == 60

    requeued = messages(client, auth_headers, job_id, "requeued")
    assert len(requeued) == 1 and "stopped heartbeating" in requeued[0], requeued
    assert resumed_step(client, auth_headers, job_id) >= 2
    seen = kinds(client, auth_headers, job_id)
    assert seen.count("started") == 2 and seen.count("succeeded") == 1, seen
    assert attempt_of(job_id) == 2


@pytest.fixture
def redis_restarter(redis_url: str) -> Iterator[Callable[[], None]]:
    """restart() stops Redis without saving and starts it again; the finally always brings it back."""

    def ping() -> bool:
        try:
            return bool(redis.Redis.from_url(redis_url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def start() -> None:
        if not ping():
            subprocess.run(REDIS_START, check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while not ping():
            assert time.monotonic() < deadline, "redis did not come back"
            time.sleep(0.2)

    def restart() -> None:
        subprocess.run(["redis-cli", "-p", REDIS_PORT, "shutdown", "nosave"], capture_output=True)
        deadline = time.monotonic() + 15
        while ping() and time.monotonic() < deadline:
            time.sleep(0.1)
        start()

    try:
        yield restart
    finally:
        start()


def test_queued_message_lost_in_a_redis_restart_is_resent_by_the_reconciler(
    client: TestClient,
    auth_headers: dict[str, str],
    start_worker: StartWorker,
    redis_url: str,
    redis_restarter: Callable[[], None],
) -> None:
    job_id = submit(client, auth_headers, fault_spec(max_steps=4))  # no worker yet: it waits in Redis
    broker = redis.Redis.from_url(redis_url)
    assert broker.llen(TRAINING_QUEUE) >= 1

    redis_restarter()
    assert broker.llen(TRAINING_QUEUE) == 0  # the message is gone (no persistence)
    assert job(client, auth_headers, job_id)["status"] == "queued"

    time.sleep(2)  # make the job older than the threshold below
    worker = start_worker("reconciler", SAFETUNE_REQUEUE_QUEUED_AFTER_SECONDS="1")
    final = wait_terminal(client, auth_headers, job_id, timeout=180)
    assert final["status"] == "succeeded", (final, worker.log())
    assert kinds(client, auth_headers, job_id).count("started") == 1
    assert attempt_of(job_id) == 1


def test_duplicate_deliveries_across_two_workers_train_once(
    client: TestClient, auth_headers: dict[str, str], start_worker: StartWorker, redis_url: str
) -> None:
    start_worker("twin-a")
    start_worker("twin-b")
    job_id = submit(client, auth_headers, fault_spec(max_steps=6))
    sender = Celery("duplicate-sender", broker=redis_url, set_as_current=False)
    try:
        for _ in range(2):  # the same task id again, by name, as a redelivery or a reaper would
            sender.send_task(TRAIN_TASK, args=[job_id], queue=TRAINING_QUEUE)
    finally:
        sender.close()

    final = wait_terminal(client, auth_headers, job_id, timeout=180)
    assert final["status"] == "succeeded"
    time.sleep(3)  # let the duplicate deliveries reach the claim and be turned away
    seen = kinds(client, auth_headers, job_id)
    assert seen.count("started") == 1 and seen.count("succeeded") == 1, seen
    assert attempt_of(job_id) == 1
    assert job(client, auth_headers, job_id)["status"] == "succeeded"


def test_sigterm_checkpoints_requeues_and_a_new_worker_resumes(
    client: TestClient, auth_headers: dict[str, str], start_worker: StartWorker
) -> None:
    first = start_worker("leaving")
    job_id = submit(client, auth_headers, fault_spec(max_steps=60))
    wait_checkpointed(client, auth_headers, job_id)

    os.kill(first.process.pid, signal.SIGTERM)  # the group leader only, as `docker stop` does
    first.process.wait(timeout=60)  # warm shutdown must not wait for the whole job
    current = job(client, auth_headers, job_id)
    assert current["status"] == "queued", (current, first.log())
    requeued = messages(client, auth_headers, job_id, "requeued")
    assert len(requeued) == 1 and "shut down" in requeued[0], requeued
    stopped_at = current["step"]
    assert stopped_at < 60

    second = start_worker("arriving")
    final = wait_terminal(client, auth_headers, job_id)
    assert final["status"] == "succeeded", (final, second.log())
    assert final["step"] == 60
    assert 2 <= resumed_step(client, auth_headers, job_id) <= stopped_at
    seen = kinds(client, auth_headers, job_id)
    assert seen.count("started") == 2 and seen.count("succeeded") == 1, seen
    assert attempt_of(job_id) == 2


def _pg_version() -> str:
    versions = sorted(os.listdir("/etc/postgresql"), key=lambda v: float(v))
    return versions[-1]


def _pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode == 0


def _pg_ctl(action: str, *extra: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", action, *extra],
        check=True,
        capture_output=True,
    )


def test_postgres_down_answers_503_then_recovers_without_restart(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    job_id = submit(client, auth_headers, fault_spec(max_steps=4))
    assert client.get(f"/jobs/{job_id}", headers=auth_headers).status_code == 200
    try:
        _pg_ctl("stop", "-m", "fast")
        down = client.get(f"/jobs/{job_id}", headers=auth_headers)
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "database_unavailable"
    finally:
        if not _pg_ready():
            _pg_ctl("start")
        deadline = time.monotonic() + 60
        while not _pg_ready():
            assert time.monotonic() < deadline, "postgres did not come back"
            time.sleep(0.2)
    # The same app (no restart): the pool drops the dead connections and reconnects.
    back = wait_for(
        lambda: {"status_code": client.get(f"/jobs/{job_id}", headers=auth_headers).status_code},
        lambda r: r["status_code"] == 200,
        30,
        "the API to answer 200 again",
    )
    assert back["status_code"] == 200
    reset_engine()  # this process's own engine also held connections to the stopped server
