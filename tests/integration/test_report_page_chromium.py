"""The HTML safety report in a real browser: uvicorn serves the app, headless Chromium opens a signed
link to the report of a real tiny job trained by a real worker, with no console or CSP errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.integration.conftest import wait_for
from tests.integration.test_training_jobs import TERMINAL, job, submit, tiny_spec
from tests.live_api import live_api

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def server(worker_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """uvicorn api.main:app in a subprocess on a free port, against the per-run database."""
    with live_api(worker_env, tmp_path / "uvicorn.log") as url:
        yield url


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={profile}",
            "--window-size=1200,1600",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(tmp_path)},
    )


def console_problems(stderr: str) -> list[str]:
    markers = (
        "Uncaught",
        "Content Security Policy",
        "Refused to",
        ":ERROR:CONSOLE",
        "Failed to load resource",
    )
    return [line for line in stderr.splitlines() if any(m in line for m in markers)]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (apt-get install -y chromium)")
def test_report_page_in_headless_chromium(
    client: TestClient, auth_headers: dict[str, str], start_worker: Any, server: str, tmp_path: Path
) -> None:
    worker = start_worker()
    job_id = submit(client, auth_headers, tiny_spec())
    final = wait_for(lambda: job(client, auth_headers, job_id), lambda j: j["status"] in TERMINAL, 240, "job")
    assert final["status"] == "succeeded", (final["error"], worker.log())

    # Mint the signed link through the real server (Chromium cannot send the Bearer header).
    minted = httpx.post(f"{server}/jobs/{job_id}/report-links", headers=auth_headers, timeout=10)
    assert minted.status_code == 201, minted.text
    url = minted.json()["url"]
    assert url.startswith(f"{server}/jobs/{job_id}/safety-report.html?token=")
    verdict = client.get(f"/jobs/{job_id}/safety-report", headers=auth_headers).json()["verdict"]

    dom = chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-3000:]
    assert f'data-verdict="{verdict}"' in dom.stdout, dom.stdout[:2000]
    assert dom.stdout.count("<svg") == 3 and "<polyline" in dom.stdout  # bars, categories, loss curve
    assert job_id in dom.stdout and "Example generations" in dom.stdout
    assert console_problems(dom.stderr) == [], console_problems(dom.stderr)

    png = tmp_path / "safety-report.png"
    shot = chromium(tmp_path, f"--screenshot={png}", url)
    assert shot.returncode == 0, shot.stderr[-3000:]
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000, png.stat().st_size  # a rendered page, not a blank canvas
    assert console_problems(shot.stderr) == [], console_problems(shot.stderr)
    print(f"screenshot: {png} ({png.stat().st_size} bytes)")  # noqa: T201
