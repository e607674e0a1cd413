"""`safetune watch` prints the event log, stops at a terminal status and maps it to the exit code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from typer.testing import CliRunner

from cli.main import app
from tests.cli.test_jobs import GOOD_LINES, MODEL


def test_watch_a_cancelled_job_exits_2_after_printing_its_events(
    runner: CliRunner, cli_env: dict[str, str], write_jsonl: Callable[[str, list[str]], Path]
) -> None:
    submitted = runner.invoke(
        app, ["submit", str(write_jsonl("t.jsonl", GOOD_LINES)), "-m", MODEL], env=cli_env
    )
    job_id = submitted.stdout.strip()
    assert runner.invoke(app, ["cancel", job_id], env=cli_env).exit_code == 0

    result = runner.invoke(app, ["watch", job_id, "--interval", "0.1"], env=cli_env)

    assert result.exit_code == 2, result.output
    assert result.stdout.rstrip().endswith(f"{job_id}: cancelled")
    events = httpx.get(
        f"{cli_env['SAFETUNE_URL']}/jobs/{job_id}/events",
        headers={"Authorization": f"Bearer {cli_env['SAFETUNE_API_KEY']}"},
    ).json()["data"]
    positions = [result.stdout.index(event["message"]) for event in events]
    assert len(events) >= 2 and positions == sorted(positions)
