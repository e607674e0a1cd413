"""Load test: N concurrent clients submit tiny-model jobs and poll them, against a real API + Postgres.

Usage:
    .venv/bin/python bench/load.py [--clients 16] [--seconds 20] [--polls 4]

Each client (a thread with its own httpx connection and its own tenant) loops until the time is up:
POST /jobs with a small dataset, then GET /jobs/{id} `--polls` times. No worker runs, so jobs stay
queued (the broker still receives every message). At the end every submitted id must be in the
database and the error count must be 0 (non-zero exit otherwise). Writes bench/results/load.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._server import Latencies, add_redis_argument, count_jobs, running_api, submit, table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "load.md"


def client_loop(
    base_url: str, key: str, stop_at: float, polls: int, ids: list[str], lock: threading.Lock
) -> Latencies:
    lat = Latencies()
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, timeout=30) as http:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                response = submit(http, key)
            except httpx.HTTPError as exc:
                lat.errors.append(f"POST /jobs: {type(exc).__name__}: {exc}")
                continue
            lat.add("POST /jobs", time.perf_counter() - started)
            if response.status_code != 201:
                lat.errors.append(f"POST /jobs: {response.status_code} {response.text[:200]}")
                continue
            job_id = response.json()["id"]
            with lock:
                ids.append(job_id)
            for _ in range(polls):
                started = time.perf_counter()
                try:
                    got = http.get(f"/jobs/{job_id}", headers=headers)
                except httpx.HTTPError as exc:
                    lat.errors.append(f"GET /jobs/{{id}}: {type(exc).__name__}: {exc}")
                    continue
                lat.add("GET /jobs/{id}", time.perf_counter() - started)
                if got.status_code != 200 or got.json()["id"] != job_id:
                    lat.errors.append(f"GET /jobs/{{id}}: {got.status_code} {got.text[:200]}")
    return lat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--polls", type=int, default=4, help="GET /jobs/{id} per submitted job")
    add_redis_argument(parser)
    args = parser.parse_args()

    with running_api(args.clients, args.redis_url) as api:
        ids: list[str] = []
        lock = threading.Lock()
        started = time.monotonic()
        stop_at = started + args.seconds
        total = Latencies()
        with ThreadPoolExecutor(args.clients) as pool:
            futures = [
                pool.submit(client_loop, api.base_url, key, stop_at, args.polls, ids, lock)
                for key in api.api_keys
            ]
            for future in futures:
                total.merge(future.result())
        wall = time.monotonic() - started
        in_db = count_jobs(api.database_url, ids)

    result = table(total, wall)
    ok = not total.errors and in_db == len(ids)
    summary = (
        f"clients={args.clients} seconds={args.seconds:g} polls/job={args.polls} wall={wall:.1f}s; "
        f"jobs submitted={len(ids)}, in DB={in_db}; errors={len(total.errors)}; "
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
    print(result)
    print(summary)
    for error in total.errors[:10]:
        print("error:", error)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        "# Load: concurrent submit + poll (bench/load.py)\n\n"
        "Real uvicorn (1 process) + Postgres + Redis on the same machine, shared with other work; "
        "no worker, so jobs stay queued.\n\n"
        + result
        + "\n\n"
        + summary
        + ("\n" if ok else "\n\n**FAILED**\n")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
