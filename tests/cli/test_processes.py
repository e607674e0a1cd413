"""serve / worker / safety-align start the right program in a separate Python process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import processes
from cli.main import app
from safetune.config import get_settings


class Exec(Exception):
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv


def _capture_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_execv(path: str, argv: list[str]) -> None:
        assert path == sys.executable
        raise Exec(argv)

    monkeypatch.setattr(processes.os, "execv", fake_execv)


@pytest.mark.parametrize(
    ("broker_url", "app_path"), [("redis://127.0.0.1:6379/0", "api.main:app"), ("", "cli.embedded_app:app")]
)
def test_serve_execs_uvicorn(monkeypatch: pytest.MonkeyPatch, broker_url: str, app_path: str) -> None:
    """Without a broker the served app also runs the training runner (or jobs would stay queued)."""
    _capture_exec(monkeypatch)
    monkeypatch.setenv("SAFETUNE_BROKER_URL", broker_url)
    get_settings.cache_clear()

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "9000"])
    get_settings.cache_clear()

    assert isinstance(result.exception, Exec)
    assert result.exception.argv[1:] == [
        "-m", "uvicorn", app_path, "--host", "0.0.0.0", "--port", "9000", "--workers", "1",
    ]  # fmt: skip


def test_worker_execs_one_celery_process_on_the_training_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    _capture_exec(monkeypatch)

    result = CliRunner().invoke(app, ["worker"])

    assert isinstance(result.exception, Exec)
    argv = result.exception.argv[1:]
    assert argv[:5] == ["-m", "celery", "-A", "worker.celery_app", "worker"]
    assert "--concurrency=1" in argv and argv[argv.index("-Q") + 1] == "training"


def test_safety_align_runs_the_alignment_module_on_the_model_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[list[str]] = []

    class Done:
        returncode = 3

    def fake_run(argv: list[str], check: bool) -> Done:
        calls.append(argv)
        return Done()

    monkeypatch.setattr(processes.subprocess, "run", fake_run)
    monkeypatch.setattr(processes, "_model_cache", lambda: tmp_path)

    result = CliRunner().invoke(app, ["safety-align"])
    again = CliRunner().invoke(app, ["safety-align", "--from-scratch"])

    assert result.exit_code == again.exit_code == 3
    argv = [sys.executable, "-m", "sap_core.alignment", "--cache", str(tmp_path)]
    assert calls == [argv, [*argv, "--from-scratch"]]
