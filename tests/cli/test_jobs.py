"""submit / status / jobs / cancel against a live API server (no worker: jobs stay queued)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from typer.testing import CliRunner

from cli.main import app

MODEL = "tiny-random-llama"
GOOD_LINES = [
    json.dumps(
        {"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}"}]}
    )
    for i in range(4)
]

WriteJsonl = Callable[[str, list[str]], Path]


def _submit(runner: CliRunner, env: dict[str, str], dataset: Path, *extra: str) -> str:
    result = runner.invoke(app, ["submit", str(dataset), "--model", MODEL, *extra], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_submit_prints_the_id_of_a_stored_job(
    runner: CliRunner, cli_env: dict[str, str], write_jsonl: WriteJsonl
) -> None:
    dataset = write_jsonl("train.jsonl", GOOD_LINES)

    job_id = _submit(
        runner, cli_env, dataset, "--guard", "ema", "--max-steps", "3", "--lora-r", "4", "--suffix", "demo"
    )

    assert job_id.startswith("ftjob-")
    job = httpx.get(
        f"{cli_env['SAFETUNE_URL']}/jobs/{job_id}",
        headers={"Authorization": f"Bearer {cli_env['SAFETUNE_API_KEY']}"},
    ).json()
    assert job["status"] == "queued"
    assert job["guard"] == "ema"
    assert job["suffix"] == "demo"
    assert job["spec"]["hyperparameters"]["max_steps"] == 3
    assert job["spec"]["hyperparameters"]["lora_r"] == 4


def test_submit_uploads_the_validation_file_first(
    runner: CliRunner, cli_env: dict[str, str], write_jsonl: WriteJsonl
) -> None:
    train = write_jsonl("train.jsonl", GOOD_LINES)
    val = write_jsonl("val.jsonl", GOOD_LINES[:2])

    job_id = _submit(runner, cli_env, train, "--validation-file", str(val))

    status = runner.invoke(app, ["status", job_id, "--json"], env=cli_env)
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["validation_file"].startswith("file-")


def test_status_and_jobs_show_the_submitted_job(
    runner: CliRunner, cli_env: dict[str, str], write_jsonl: WriteJsonl
) -> None:
    job_id = _submit(runner, cli_env, write_jsonl("train.jsonl", GOOD_LINES))

    status = runner.invoke(app, ["status", job_id], env=cli_env)
    listing = runner.invoke(app, ["jobs", "--json"], env=cli_env)

    assert status.exit_code == 0, status.output
    assert job_id in status.stdout and "queued" in status.stdout and MODEL in status.stdout
    assert listing.exit_code == 0, listing.output
    assert [job["id"] for job in json.loads(listing.stdout)["data"]] == [job_id]


def test_cancel_a_queued_job(runner: CliRunner, cli_env: dict[str, str], write_jsonl: WriteJsonl) -> None:
    job_id = _submit(runner, cli_env, write_jsonl("train.jsonl", GOOD_LINES))

    result = runner.invoke(app, ["cancel", job_id], env=cli_env)

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{job_id}: cancelled"
    status = runner.invoke(app, ["status", job_id, "--json"], env=cli_env)
    assert json.loads(status.stdout)["status"] == "cancelled"


def test_bad_dataset_fails_with_the_line_number(
    runner: CliRunner, cli_env: dict[str, str], write_jsonl: WriteJsonl
) -> None:
    dataset = write_jsonl("bad.jsonl", [GOOD_LINES[0], GOOD_LINES[1], "{not json"])

    result = runner.invoke(app, ["submit", str(dataset), "--model", MODEL], env=cli_env)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: dataset_invalid_line (line 3")
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_model_names_the_alternatives(
    runner: CliRunner, cli_env: dict[str, str], write_jsonl: WriteJsonl
) -> None:
    result = runner.invoke(
        app, ["submit", str(write_jsonl("t.jsonl", GOOD_LINES)), "--model", "gpt-17"], env=cli_env
    )

    assert result.exit_code == 1
    assert "base_model_unknown" in result.stderr and MODEL in result.stderr


def test_wrong_key_is_a_clear_auth_error(runner: CliRunner, live_server: str) -> None:
    result = runner.invoke(app, ["jobs"], env={"SAFETUNE_URL": live_server, "SAFETUNE_API_KEY": "st-nope"})

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: auth_invalid (param Authorization): invalid or revoked API key [HTTP 401]"
    )


def test_missing_key_fails_before_any_request(runner: CliRunner, live_server: str) -> None:
    result = runner.invoke(app, ["jobs"], env={"SAFETUNE_URL": live_server, "SAFETUNE_API_KEY": ""})

    assert result.exit_code == 1
    assert "SAFETUNE_API_KEY" in result.stderr


def test_unreachable_server_is_reported(runner: CliRunner) -> None:
    env = {"SAFETUNE_URL": "http://127.0.0.1:9", "SAFETUNE_API_KEY": "st-x"}

    result = runner.invoke(app, ["status", "ftjob-1"], env=env)

    assert result.exit_code == 1
    assert "cannot reach the safetune API at http://127.0.0.1:9" in result.stderr


def test_unknown_job_is_not_found(runner: CliRunner, cli_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["status", "ftjob-missing"], env=cli_env)

    assert result.exit_code == 1
    assert "job_not_found" in result.stderr
