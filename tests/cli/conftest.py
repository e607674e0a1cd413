"""A live API server (uvicorn subprocess) for the CLI tests, and a CliRunner that talks to it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.live_api import live_api


@pytest.fixture(scope="session")
def live_server(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`uvicorn api.main:app` on a free port, on the per-run test DB, broker = per-run Redis db.

    No worker consumes the queue, so submitted jobs stay `queued`: enough for submit/status/cancel.
    """
    env = {
        **os.environ,
        "SAFETUNE_DATABASE_URL": database_url,
        "SAFETUNE_BROKER_URL": redis_url,
        "SAFETUNE_ENVIRONMENT": "test",
        "SAFETUNE_STATE_DIR": str(tmp_path_factory.mktemp("state")),
    }
    with live_api(env, tmp_path_factory.mktemp("server") / "uvicorn.log") as url:
        yield url


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
