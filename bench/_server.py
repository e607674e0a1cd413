"""A real API for the benches: a fresh Postgres database migrated by Alembic, uvicorn in a subprocess
on a free port, the broker on the Redis db given with --redis-url, and one tenant + API key per client.

Shared by bench/load.py and bench/api_latency.py. Everything is torn down on exit (database dropped,
the bench's Redis db flushed, server terminated).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import redis

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_DSN = os.environ.get("SAFETUNE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
REDIS_URL_ENV = "SAFETUNE_BENCH_REDIS_URL"

# A tiny-model job, the smallest spec a client would send.
SPEC = {
    "base_model": "tiny-random-llama",
    "guard": "none",
    "hyperparameters": {"max_steps": 4, "batch_size": 2, "max_seq_len": 128},
}
DATASET = b"".join(
    json.dumps(
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
    ).encode()
    + b"\n"
    for i in range(8)
)


@dataclass
class Api:
    base_url: str
    database_url: str
    api_keys: list[str]
    server_log: Path
    server_pid: int


@dataclass
class Latencies:
    """Per-endpoint wall-clock samples (seconds) and error descriptions."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, endpoint: str, seconds: float) -> None:
        self.samples.setdefault(endpoint, []).append(seconds)

    def merge(self, other: Latencies) -> None:
        for endpoint, values in other.samples.items():
            self.samples.setdefault(endpoint, []).extend(values)
        self.errors.extend(other.errors)


def percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def table(lat: Latencies, wall_seconds: float) -> str:
    rows = [
        "| endpoint | requests | req/s | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for endpoint, values in sorted(lat.samples.items()):
        rows.append(
            f"| {endpoint} | {len(values)} | {len(values) / wall_seconds:.1f} | "
            f"{percentile(values, 50) * 1000:.1f} | {percentile(values, 99) * 1000:.1f} | "
            f"{max(values) * 1000:.1f} |"
        )
    total = sum(len(v) for v in lat.samples.values())
    rows.append(f"| **all** | {total} | {total / wall_seconds:.1f} | | | |")
    return "\n".join(rows)


def submit(http: httpx.Client, key: str) -> httpx.Response:
    return http.post(
        "/jobs",
        headers={"Authorization": f"Bearer {key}"},
        files={"dataset": ("train.jsonl", DATASET, "application/jsonl")},
        data={"spec": json.dumps(SPEC)},
    )


def add_redis_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        default=os.environ.get(REDIS_URL_ENV),
        help=f"the bench's own Redis db, e.g. redis://127.0.0.1:6379/9; it must be empty and is flushed "
        f"on exit (default: ${REDIS_URL_ENV})",
    )


def own_redis_db(url: str | None) -> str:
    """``url`` if it names a db index explicitly and that db is empty; ValueError otherwise.

    The benches used to pick a db index on the shared Redis themselves (a counter mod 15) and flush
    it on exit, which could wipe another run's data (issue 13). Now the caller names the db, and an
    empty one at start is the evidence that flushing it at the end removes only the bench's keys.
    """
    if not url:
        raise ValueError(f"give the bench a Redis db of its own: --redis-url or ${REDIS_URL_ENV}")
    db = urlsplit(url).path.lstrip("/")
    if not (db.isascii() and db.isdigit()):
        raise ValueError(f"{url!r} names no db index; add one, e.g. redis://127.0.0.1:6379/9")
    client = redis.Redis.from_url(url)
    try:
        keys = client.dbsize()
    finally:
        client.close()
    if keys:
        raise ValueError(
            f"{url} holds {keys} keys; the bench flushes its db on exit, so give it an empty one"
        )
    return url


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (Linux /proc), None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the ")" closing the command name, utime and stime are the 12th and 13th fields.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _migrate(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(REPO / "alembic.ini"))
    config.set_main_option("script_location", str(REPO / "migrations"))
    config.set_main_option("path_separator", "os")
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


def _make_keys(url: str, count: int) -> list[str]:
    os.environ["SAFETUNE_DATABASE_URL"] = url
    from safetune.config import get_settings
    from safetune.db import reset_engine, session_scope
    from safetune.repositories import tenants

    get_settings.cache_clear()
    reset_engine()
    keys = []
    with session_scope() as session:
        for i in range(count):
            tenant = tenants.create_tenant(
                session, f"bench-{i}-{uuid.uuid4().hex[:8]}", max_queued_jobs=10**6
            )
            keys.append(tenants.create_api_key(session, tenant.id)[1])
    return keys


def count_jobs(url: str, job_ids: list[str]) -> int:
    """How many of `job_ids` exist in the database (straight SQL, not through the API)."""
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM jobs WHERE id = ANY(%s)", (job_ids,)).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def running_api(clients: int, redis_url: str | None, uvicorn_workers: int = 1) -> Iterator[Api]:
    broker_url = own_redis_db(redis_url)
    name = f"safetune_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_URL.format(name=name)
    port = _free_port()
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"{name}-uvicorn.log"
    server: subprocess.Popen[bytes] | None = None
    try:
        _migrate(url)
        keys = _make_keys(url, clients)
        env = dict(
            os.environ,
            SAFETUNE_DATABASE_URL=url,
            SAFETUNE_BROKER_URL=broker_url,
            SAFETUNE_ENVIRONMENT="test",
            SAFETUNE_RATE_LIMIT_PER_MINUTE=str(10**9),
            SAFETUNE_MAX_QUEUED_JOBS_PER_TENANT=str(10**6),
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)]
            + ["--workers", str(uvicorn_workers), "--log-level", "warning", "--no-access-log"],
            cwd=REPO,
            env=env,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"API did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Api(base, url, keys, log_path, server.pid)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        from safetune.db import reset_engine

        reset_engine()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        flush = redis.Redis.from_url(broker_url)
        flush.flushdb()
        flush.close()
