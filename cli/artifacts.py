"""Results of a finished job: the safety report and the PEFT adapter."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cli.client import DEFAULT_URL, ApiKeyOption, UrlOption, api_client, fail, print_json

# Exactly what PeftModel.save_pretrained(safe_serialization=True) writes (STYLE rule 21).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
VERDICT_STYLE = {"pass": "bold green", "warn": "bold yellow", "fail": "bold red"}

console = Console()


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return f"{value:.3f}"
    if isinstance(value, dict) and {"low", "high"} <= value.keys():
        return f"[{value['low']:.3f}, {value['high']:.3f}]"
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"[{_num(value[0])}, {_num(value[1])}]"
    return str(value)


def _with_ci(summary: dict[str, Any], key: str) -> str:
    text = _num(summary.get(key))
    ci = summary.get(f"{key}_ci")
    return f"{text} {_num(ci)}" if ci is not None else text


def _delta(base: Any, tuned: Any) -> str:
    if isinstance(base, int | float) and isinstance(tuned, int | float) and not isinstance(base, bool):
        return f"{tuned - base:+.3f}"
    return ""


def render_report(body: dict[str, Any]) -> None:
    """Verdict, then base-vs-tuned metrics (pairs base_X/tuned_X in the summary), then utility."""
    report: dict[str, Any] = body.get("report") or {}
    verdict_info = report.get("verdict") if isinstance(report.get("verdict"), dict) else {}
    verdict = str(body.get("verdict") or verdict_info.get("status", "?"))
    console.print(
        f"Safety report for [bold]{body.get('job_id')}[/]: "
        f"[{VERDICT_STYLE.get(verdict, 'bold')}]{verdict.upper()}[/]"
    )
    for reason in verdict_info.get("reasons", []) or []:
        console.print(f"  - {reason}")

    summary: dict[str, Any] = dict(report.get("summary") or {})
    summary.setdefault("base_harmful_score", body.get("base_harmful_score"))
    summary.setdefault("tuned_harmful_score", body.get("tuned_harmful_score"))
    table = Table("metric", "base", "tuned", "change", title="Safety (base vs tuned)")
    paired: set[str] = set()
    for key in summary:
        if not key.startswith("base_") or key.endswith("_ci"):
            continue
        metric = key.removeprefix("base_")
        tuned_key = f"tuned_{metric}"
        if tuned_key not in summary:
            continue
        paired.update({key, tuned_key, f"{key}_ci", f"{tuned_key}_ci"})
        table.add_row(
            metric.replace("_", " "),
            _with_ci(summary, key),
            _with_ci(summary, tuned_key),
            _delta(summary[key], summary[tuned_key]),
        )
    others = [(k, v) for k, v in summary.items() if k not in paired and not isinstance(v, dict | list)]
    for key, value in others:
        table.add_row(key.replace("_", " "), "", _num(value), "")
    console.print(table)

    utility = report.get("utility")
    if isinstance(utility, dict):
        util_table = Table(
            "utility", "before", "after", "change", title="Utility (task loss, lower is better)"
        )
        before, after = utility.get("loss_before"), utility.get("loss_after")
        util_table.add_row(
            f"{utility.get('loss_set', 'eval')} loss", _num(before), _num(after), _delta(before, after)
        )
        console.print(util_table)


def report(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw report JSON.")] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Show the safety report of a finished job."""
    with api_client(url, api_key) as client:
        body = client.get_json(f"/jobs/{job_id}/safety-report")
    if as_json:
        print_json(body)
    else:
        render_report(body)


def extract_adapter(data: bytes, out_dir: Path) -> list[Path]:
    """Write only the two PEFT files, flattened into out_dir; any other member is ignored."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {
            PurePosixPath(info.filename).name: info for info in archive.infolist() if not info.is_dir()
        }
        missing = [name for name in ADAPTER_FILES if name not in members]
        if missing:
            fail(f"adapter archive lacks {', '.join(missing)}")
        for name in ADAPTER_FILES:
            # Only the basename is used as the target, so "../" entries cannot escape out_dir.
            target = out_dir / name
            target.write_bytes(archive.read(members[name]))
            written.append(target)
    return written


def download(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    output: Annotated[
        Path, typer.Option("--output", "-o", file_okay=False, help="Directory to extract into.")
    ],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Download the adapter zip, check its sha256 against the ETag, extract the PEFT files."""
    with api_client(url, api_key) as client, client.stream(f"/jobs/{job_id}/adapter") as response:
        etag = response.headers.get("etag", "").removeprefix("W/").strip('"')
        digest = hashlib.sha256()
        buffer = io.BytesIO()
        for chunk in response.iter_bytes():
            digest.update(chunk)
            buffer.write(chunk)
    if not etag:
        fail("the server sent no ETag; cannot verify the adapter's integrity")
    if digest.hexdigest() != etag:
        fail(f"checksum mismatch: downloaded sha256 {digest.hexdigest()} != ETag {etag}")
    for path in extract_adapter(buffer.getvalue(), output):
        typer.echo(str(path))
