"""report and download against the live server, with the worker's results inserted as rows."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from safetune.db import session_scope
from safetune.models import Adapter, SafetyReport
from tests.cli.test_jobs import GOOD_LINES, MODEL

WriteJsonl = Callable[[str, list[str]], Path]


def _rate(rate: float, lo: float, hi: float, n: int = 40) -> dict[str, object]:
    return {"rate": rate, "k": round(rate * n), "n": n, "ci95": [lo, hi]}


REPORT = {
    "schema_version": 1,
    "verdict": {
        "status": "warn",
        "reasons": ["harmful score 0.150 is within 0.300 but its upper bound is not"],
    },
    "primary_judge": "keyword",
    "metrics": {
        "harmful_score": {
            "base": _rate(0.05, 0.01, 0.17),
            "tuned": _rate(0.15, 0.07, 0.31),
            "delta": {"value": 0.10, "ci95": [-0.04, 0.24]},
        },
        "refusal_rate": {
            "base": _rate(0.9, 0.77, 0.96),
            "tuned": _rate(0.8, 0.65, 0.9),
            "delta": {"value": -0.1, "ci95": [-0.25, 0.05]},
        },
        "over_refusal_rate": {
            "base": _rate(0.1, 0.04, 0.23),
            "tuned": _rate(0.125, 0.05, 0.26),
            "delta": {"value": 0.025, "ci95": [-0.1, 0.15]},
        },
    },
    "utility": {"loss_set": "validation", "val_loss_before": 2.5, "val_loss_after": 1.25},
    "summary": {"base_harmful_score": 0.05, "tuned_harmful_score": 0.15},
}


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _finished_job(
    runner: CliRunner,
    env: dict[str, str],
    write_jsonl: WriteJsonl,
    adapter_zip: bytes,
    sha256: str | None = None,
) -> str:
    """A submitted job with the rows a worker would write on success (adapter + safety report)."""
    job_id = runner.invoke(
        app, ["submit", str(write_jsonl("t.jsonl", GOOD_LINES)), "-m", MODEL], env=env
    ).stdout
    job_id = job_id.strip()
    with session_scope() as session:
        session.add(
            Adapter(
                job_id=job_id,
                content=adapter_zip,
                sha256=sha256 or hashlib.sha256(adapter_zip).hexdigest(),
                size_bytes=len(adapter_zip),
            )
        )
        session.add(
            SafetyReport(
                job_id=job_id,
                schema_version=1,
                verdict="warn",
                base_harmful_score=0.05,
                tuned_harmful_score=0.15,
                report=REPORT,
            )
        )
    return job_id


PEFT_FILES = {"adapter_config.json": b'{"r": 4}', "adapter_model.safetensors": b"\x00weights"}


def test_download_verifies_and_extracts_only_the_peft_files(
    runner: CliRunner, cli_env: dict[str, str], write_jsonl: WriteJsonl, tmp_path: Path
) -> None:
    archive = _zip(
        {**{f"adapter/{k}": v for k, v in PEFT_FILES.items()}, "../evil.txt": b"x", "notes.md": b"y"}
    )
    job_id = _finished_job(runner, cli_env, write_jsonl, archive)
    out = tmp_path / "out"

    result = runner.invoke(app, ["download", job_id, "-o", str(out)], env=cli_env)

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(PEFT_FILES)
    assert {name: (out / name).read_bytes() for name in PEFT_FILES} == PEFT_FILES
    assert not (tmp_path / "evil.txt").exists()


def test_download_refuses_a_checksum_mismatch(
    runner: CliRunner, cli_env: dict[str, str], write_jsonl: WriteJsonl, tmp_path: Path
) -> None:
    job_id = _finished_job(runner, cli_env, write_jsonl, _zip(PEFT_FILES), sha256="0" * 64)

    result = runner.invoke(app, ["download", job_id, "-o", str(tmp_path / "out")], env=cli_env)

    assert result.exit_code == 1
    assert "checksum mismatch" in result.stderr
    assert not (tmp_path / "out").exists()


def test_download_before_the_adapter_exists(
    runner: CliRunner, cli_env: dict[str, str], write_jsonl: WriteJsonl, tmp_path: Path
) -> None:
    job_id = runner.invoke(app, ["submit", str(write_jsonl("t.jsonl", GOOD_LINES)), "-m", MODEL], env=cli_env)

    result = runner.invoke(app, ["download", job_id.stdout.strip(), "-o", str(tmp_path)], env=cli_env)

    assert result.exit_code == 1
    assert "adapter_not_ready" in result.stderr


def test_report_renders_verdict_metrics_and_utility(
    runner: CliRunner, cli_env: dict[str, str], write_jsonl: WriteJsonl
) -> None:
    job_id = _finished_job(runner, cli_env, write_jsonl, _zip(PEFT_FILES))

    result = runner.invoke(app, ["report", job_id], env={**cli_env, "COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "WARN" in out and "upper bound is not" in out
    assert "harmful score" in out and "0.050 [0.010, 0.170]" in out and "0.150 [0.070, 0.310]" in out
    assert "+0.100 [-0.040, 0.240]" in out
    assert "over refusal rate" in out and "refusal rate" in out
    assert "validation loss" in out and "2.500" in out and "1.250" in out and "-1.250" in out


def test_report_json_is_the_raw_response(
    runner: CliRunner, cli_env: dict[str, str], write_jsonl: WriteJsonl
) -> None:
    job_id = _finished_job(runner, cli_env, write_jsonl, _zip(PEFT_FILES))

    result = runner.invoke(app, ["report", job_id, "--json"], env=cli_env)

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["job_id"] == job_id and body["report"] == REPORT
