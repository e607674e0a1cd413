"""Throughput and p50/p99 latency of GET /healthz, POST /jobs and GET /jobs/{id} at N clients, on Postgres.

Usage:
    .venv/bin/python bench/api_latency.py --redis-url redis://127.0.0.1:6379/<empty db> \
        [--concurrency 16] [--seconds 12]

Three timed phases against one uvicorn process, each `--seconds` long after a one-second warm-up,
from `--concurrency` keep-alive connections (bench/_http_client.py):
  1. GET /healthz: no auth, no database; the ceiling for this server on this machine right now.
  2. POST /jobs: small multipart submissions, one tenant per connection.
  3. GET /jobs/{id}: the jobs of phase 2, each read through the tenant that owns it.
Every row shows its throughput as a fraction of /healthz's from the same run ("x healthz"), which
cancels most of the machine's load out of the comparison, and the API process's own CPU time per
request. Writes bench/results/api_latency.md (or --out).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._http_client import Call, PhaseResult, build_call, run_phase  # noqa: E402
from bench._server import DATASET, SPEC, Api, add_redis_argument, percentile, process_cpu_seconds, running_api  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "api_latency.md"
GET_JOB = "GET /jobs/{id}"


@dataclass
class Row:
    endpoint: str
    phase: PhaseResult
    cpu_seconds: float | None

    @property
    def count(self) -> int:
        return len(self.phase.samples.get(self.endpoint, []))

    @property
    def rate(self) -> float:
        return self.count / self.phase.wall_seconds


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _timed(api: Api, endpoint: str, run: Callable[[], PhaseResult]) -> Row:
    cpu_before = process_cpu_seconds(api.server_pid)
    phase = run()
    cpu_after = process_cpu_seconds(api.server_pid)
    cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return Row(endpoint, phase, cpu)


def measure(api: Api, concurrency: int, seconds: float) -> list[Row]:
    base = api.base_url
    healthz = build_call("GET /healthz", 200, httpx.Request("GET", f"{base}/healthz"))
    rows = [
        _timed(
            api, healthz.endpoint, lambda: run_phase(base, concurrency, seconds, itertools.repeat(healthz))
        )
    ]

    upload = {"dataset": ("train.jsonl", DATASET, "application/jsonl")}
    owner = {
        build_call(
            "POST /jobs",
            201,
            httpx.Request(
                "POST", f"{base}/jobs", headers=_auth(key), files=upload, data={"spec": json.dumps(SPEC)}
            ),
        ): key
        for key in api.api_keys
    }
    created: list[Call] = []

    def remember(call: Call, body: bytes) -> None:
        # Phase 3 reads each job back with the key that created it (tenancy).
        job_url = f"{base}/jobs/{json.loads(body)['id']}"
        created.append(build_call(GET_JOB, 200, httpx.Request("GET", job_url, headers=_auth(owner[call]))))

    posts = itertools.cycle(owner)
    rows.append(
        _timed(api, "POST /jobs", lambda: run_phase(base, concurrency, seconds, posts, on_body=remember))
    )
    if created:
        gets = itertools.cycle(created)
        rows.append(_timed(api, GET_JOB, lambda: run_phase(base, concurrency, seconds, gets)))
    return rows


def render(rows: list[Row], concurrency: int, seconds: float) -> str:
    ceiling = rows[0].rate or float("nan")
    lines = [
        f"{concurrency} keep-alive clients, {seconds:g} s per route after a 1 s warm-up; one uvicorn process",
        "",
        "| endpoint | requests | req/s | x healthz | p50 ms | p99 ms | max ms | API CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        values = row.phase.samples.get(row.endpoint, [])
        if not values:
            lines.append(f"| {row.endpoint} | 0 | | | | | | |")
            continue
        cpu = f"{row.cpu_seconds * 1000 / row.count:.2f}" if row.cpu_seconds is not None else "-"
        lines.append(
            f"| {row.endpoint} | {row.count} | {row.rate:.1f} | {row.rate / ceiling:.2f} | "
            f"{percentile(values, 50) * 1000:.1f} | {percentile(values, 99) * 1000:.1f} | "
            f"{max(values) * 1000:.1f} | {cpu} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=12.0, help="timed seconds per route")
    parser.add_argument("--out", type=Path, default=RESULTS)
    add_redis_argument(parser)
    args = parser.parse_args()

    load_before = os.getloadavg()
    with running_api(args.concurrency, args.redis_url) as api:
        rows = measure(api, args.concurrency, args.seconds)
    load_after = os.getloadavg()

    errors = [error for row in rows for error in row.phase.errors]
    body = render(rows, args.concurrency, args.seconds)
    summary = (
        f"errors={len(errors)}; machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"1-min load average {load_before[0]:.2f} before / {load_after[0]:.2f} after, "
        f"bench niceness {os.nice(0)}; python {platform.python_version()}; Postgres + Redis local"
    )
    print(body)
    print(summary)
    for error in errors[:10]:
        print("error:", error)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# API latency (bench/api_latency.py)\n\n" + body + "\n\n" + summary + "\n")
    return 0 if not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
