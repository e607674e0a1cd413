"""p50/p99 latency of POST /jobs (small dataset) and GET /jobs/{id} under concurrency, on Postgres.

Usage:
    .venv/bin/python bench/api_latency.py [--concurrency 16] [--posts 320] [--gets 1600]

Phase 1 sends `--posts` job submissions from `--concurrency` threads; phase 2 reads those jobs back
with `--gets` GET /jobs/{id}. Each phase is timed on its own. Writes bench/results/api_latency.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._server import Latencies, add_redis_argument, running_api, submit, table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "api_latency.md"


def run_phase(
    base_url: str, concurrency: int, calls: list[tuple[str, str | None]]
) -> tuple[Latencies, float, list[str]]:
    """calls: (api_key, job_id or None for a POST). Returns latencies, wall seconds, created ids."""
    local = __import__("threading").local()

    def one(call: tuple[str, str | None]) -> tuple[str, float, str | None, str | None]:
        key, job_id = call
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=base_url, timeout=30)
        started = time.perf_counter()
        try:
            if job_id is None:
                response = submit(local.http, key)
                endpoint, ok = "POST /jobs", response.status_code == 201
            else:
                response = local.http.get(f"/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"})
                endpoint, ok = "GET /jobs/{id}", response.status_code == 200
        except httpx.HTTPError as exc:
            return "error", 0.0, None, f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
        if not ok:
            return endpoint, elapsed, None, f"{endpoint}: {response.status_code} {response.text[:200]}"
        return endpoint, elapsed, response.json()["id"] if job_id is None else None, None

    lat = Latencies()
    created: list[str] = []
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        for endpoint, elapsed, new_id, error in pool.map(one, calls):
            if error:
                lat.errors.append(error)
                continue
            lat.add(endpoint, elapsed)
            if new_id:
                created.append(new_id)
    return lat, time.monotonic() - started, created


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--posts", type=int, default=320)
    parser.add_argument("--gets", type=int, default=1600)
    add_redis_argument(parser)
    args = parser.parse_args()

    with running_api(args.concurrency, args.redis_url) as api:
        keys = itertools.cycle(api.api_keys)
        posts, post_wall, created = run_phase(
            api.base_url, args.concurrency, [(next(keys), None) for _ in range(args.posts)]
        )
        # Read back through the owning tenant: key i created the jobs of calls i, i+n, ...
        owners = list(itertools.islice(itertools.cycle(api.api_keys), args.posts))
        pairs = (
            [(owners[i], job_id) for i, job_id in enumerate(created)] if len(created) == args.posts else []
        )
        gets, get_wall, _ = (
            run_phase(
                api.base_url, args.concurrency, list(itertools.islice(itertools.cycle(pairs), args.gets))
            )
            if pairs
            else (Latencies(errors=["POST phase had errors; GET phase skipped"]), 1.0, [])
        )

    errors = posts.errors + gets.errors
    body = (
        f"## POST /jobs (small dataset), concurrency {args.concurrency}\n\n{table(posts, post_wall)}\n\n"
        f"## GET /jobs/{{id}}, concurrency {args.concurrency}\n\n{table(gets, get_wall)}\n"
    )
    summary = (
        f"errors={len(errors)}; machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}; uvicorn 1 process, Postgres + Redis local"
    )
    print(body)
    print(summary)
    for error in errors[:10]:
        print("error:", error)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("# API latency (bench/api_latency.py)\n\n" + body + "\n" + summary + "\n")
    return 0 if not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
