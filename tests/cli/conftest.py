"""A live API server (uvicorn subprocess) for the CLI tests, and a CliRunner that talks to it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def live_server(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`uvicorn api.main:app` on a free port, on the per-run test DB, broker = per-run Redis db.

    No worker consumes the queue, so submitted jobs stay `queued`: enough for submit/status/cancel.
    """
    port = _free_port()
    env = {
        **os.environ,
        "SAFETUNE_DATABASE_URL": database_url,
        "SAFETUNE_BROKER_URL": redis_url,
        "SAFETUNE_ENVIRONMENT": "test",
        "SAFETUNE_STATE_DIR": str(tmp_path_factory.mktemp("state")),
    }
    log_path = tmp_path_factory.mktemp("server") / "uvicorn.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"API server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"API server did not answer /healthz in {STARTUP_SECONDS} s:\n{log_path.read_text()}"
                )
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture()
def cli_env(live_server: str, tenant: tuple[str, str]) -> dict[str, str]:
    """SAFETUNE_URL + SAFETUNE_API_KEY for a fresh tenant of this test."""
    return {"SAFETUNE_URL": live_server, "SAFETUNE_API_KEY": tenant[1]}


@pytest.fixture()
def write_jsonl(tmp_path: Path) -> Callable[[str, list[str]], Path]:
    def _write(name: str, lines: list[str]) -> Path:
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n")
        return path

    return _write
