"""Real processes: a `celery worker` subprocess on the real Redis, against the per-run Postgres DB."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import fresh_database, fresh_redis_db

REPO = Path(__file__).resolve().parents[2]
FAULT_SUFFIX = "inject-fault"
LOCAL_RECEIVERS = "127.0.0.1"  # the tests' webhook receivers listen on loopback


def model_cache_dir() -> Path:
    return Path(os.environ.get("SAFETUNE_MODEL_CACHE", REPO / ".cache" / "models"))


class WorkerProcess:
    """One `celery -A worker.celery_app worker` subprocess with its own log file."""

    def __init__(self, env: dict[str, str], log_path: Path, name: str) -> None:
        self.log_path = log_path
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "worker",
                "--concurrency=1",
                "-Q",
                "training",
                "--loglevel=INFO",
                "-n",
                f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=REPO,
            env=env,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so kill -9 of the group takes the training child too
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready." in self.log_path.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log():}")
            time.sleep(0.3)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def kill_hard(self) -> None:
        """kill -9 the worker and everything it started (a machine losing power, as seen by the DB)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


@pytest.fixture(scope="package")
def database_url() -> Iterator[str]:
    """Integration tests get a database of their own: workers (and their reapers) run every queued
    job they find, so jobs that unit tests left queued must not be in it."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="package")
def redis_url() -> Iterator[str]:
    """...and a Redis db of their own, for the same reason."""
    with fresh_redis_db() as url:
        yield url


@pytest.fixture(scope="package")
def worker_env(database_url: str, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SAFETUNE_DATABASE_URL=database_url,
        SAFETUNE_BROKER_URL=redis_url,
        SAFETUNE_MODEL_CACHE=str(model_cache_dir()),
        SAFETUNE_HEARTBEAT_SECONDS="1",
        SAFETUNE_STALE_AFTER_SECONDS="8",
        SAFETUNE_REQUEUE_QUEUED_AFTER_SECONDS="30",
        SAFETUNE_TRAINING_DEVICE="cpu",
        # Tiny-model steps take seconds: these tests count and resume from checkpoints a few steps
        # apart, which the production minimum interval (60 s) would skip.
        SAFETUNE_CHECKPOINT_MIN_INTERVAL_SECONDS="0",
        SAFETUNE_FAULT_SUFFIX=FAULT_SUFFIX,
        SAFETUNE_WEBHOOK_ALLOWED_HOSTS=LOCAL_RECEIVERS,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )
    return env


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(name: str = "w1", **extra_env: str) -> WorkerProcess:
        worker = WorkerProcess({**worker_env, **extra_env}, tmp_path / f"{name}.log", name)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_for(
    fetch: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = fetch()
        if done(last):
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last}")
