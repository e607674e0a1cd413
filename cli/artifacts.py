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
from safetune.adapter_format import ADAPTER_FILES, TOKENIZER_FILES

VERDICT_STYLE = {"pass": "bold green", "warn": "bold yellow", "fail": "bold red"}

console = Console()


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.3f}"
    return str(value)


def _ci(ci: Any) -> str:
    if isinstance(ci, list | tuple) and len(ci) == 2 and None not in ci:
        return f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return ""


def _rate(side: Any) -> str:
    """{"rate", "k", "n", "ci95"} -> "0.250 [0.100, 0.450]"."""
    if not isinstance(side, dict):
        return _num(side)
    return _num(side.get("rate")) + _ci(side.get("ci95"))


def _delta(base: Any, tuned: Any) -> str:
    if isinstance(base, int | float) and isinstance(tuned, int | float):
        return f"{tuned - base:+.3f}"
    return ""


def _metrics_table(report: dict[str, Any], body: dict[str, Any]) -> Table:
    """Base vs tuned with 95% intervals from report["metrics"]; the summary columns as a fallback."""
    judge = report.get("primary_judge")
    title = "Safety, base vs tuned (95% CI)" + (f", judge {judge}" if judge else "")
    table = Table("metric", "base", "tuned", "change", "n", title=title)
    metrics = report.get("metrics")
    if isinstance(metrics, dict) and metrics:
        for name, cmp in metrics.items():
            if not isinstance(cmp, dict):
                continue
            delta = cmp.get("delta") or {}
            n = (cmp.get("tuned") or {}).get("n") if isinstance(cmp.get("tuned"), dict) else None
            table.add_row(
                name.replace("_", " "),
                _rate(cmp.get("base")),
                _rate(cmp.get("tuned")),
                (f"{delta['value']:+.3f}" if isinstance(delta.get("value"), int | float) else "-")
                + _ci(delta.get("ci95")),
                "-" if n is None else str(n),
            )
        return table
    summary: dict[str, Any] = dict(report.get("summary") or {})
    summary.setdefault("base_harmful_score", body.get("base_harmful_score"))
    summary.setdefault("tuned_harmful_score", body.get("tuned_harmful_score"))
    for key, base in summary.items():
        metric = key.removeprefix("base_")
        if key.startswith("base_") and f"tuned_{metric}" in summary:
            tuned = summary[f"tuned_{metric}"]
            table.add_row(metric.replace("_", " "), _num(base), _num(tuned), _delta(base, tuned), "-")
    return table


def render_report(body: dict[str, Any]) -> None:
    """Verdict and reasons, base-vs-tuned safety metrics, then utility (task loss before/after)."""
    report: dict[str, Any] = body.get("report") or {}
    raw_verdict = report.get("verdict")
    verdict_info: dict[str, Any] = raw_verdict if isinstance(raw_verdict, dict) else {}
    verdict = str(body.get("verdict") or verdict_info.get("status", "?"))
    style = VERDICT_STYLE.get(verdict, "bold")
    console.print(f"Safety report for [bold]{body.get('job_id')}[/]: [{style}]{verdict.upper()}[/]")
    for reason in verdict_info.get("reasons", []) or []:
        console.print(f"  - {reason}")
    console.print(_metrics_table(report, body))

    utility = report.get("utility")
    if isinstance(utility, dict) and utility:
        table = Table("utility", "before", "after", "change", title="Utility (task loss, lower is better)")
        before, after = utility.get("val_loss_before"), utility.get("val_loss_after")
        if before is not None or after is not None:
            label = f"{utility.get('loss_set', 'validation')} loss"
            table.add_row(label, _num(before), _num(after), _delta(before, after))
        console.print(table)


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
    """Write the two PEFT files and any tokenizer files, flattened into out_dir; others are ignored."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {
            PurePosixPath(info.filename).name: info for info in archive.infolist() if not info.is_dir()
        }
        missing = [name for name in ADAPTER_FILES if name not in members]
        if missing:
            fail(f"adapter archive lacks {', '.join(missing)}")
        for name in (*ADAPTER_FILES, *(t for t in TOKENIZER_FILES if t in members)):
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
