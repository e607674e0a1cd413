"""Job commands over HTTP: submit, status, jobs (list), cancel."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cli.client import DEFAULT_URL, ApiClient, ApiKeyOption, UrlOption, api_client, fail, print_json

console = Console()


class GuardChoice(StrEnum):
    # Mirrors safetune.schemas.Guard without importing pydantic at CLI start-up; the server validates.
    SAP = "sap"
    EMA = "ema"
    NONE = "none"


JsonFlag = Annotated[bool, typer.Option("--json", help="Print the raw API response.")]
ExistingFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]


def build_spec(
    model: str,
    guard: GuardChoice,
    hyperparameters: dict[str, Any],
    suffix: str | None,
    validation_file_id: str | None,
) -> dict[str, Any]:
    """The JSON `spec` part: unset hyperparameters are left out so the server's defaults apply."""
    spec: dict[str, Any] = {
        "base_model": model,
        "guard": guard.value,
        "hyperparameters": {k: v for k, v in hyperparameters.items() if v is not None},
    }
    if suffix:
        spec["suffix"] = suffix
    if validation_file_id:
        spec["validation_file_id"] = validation_file_id
    return spec


def upload_file(client: ApiClient, path: Path, purpose: str) -> str:
    with path.open("rb") as handle:
        body = client.post_json(
            "/files", files={"file": (path.name, handle, "application/jsonl")}, data={"purpose": purpose}
        )
    return str(body["id"])


def submit(
    dataset: ExistingFile,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Base model name (see `safetune models list`).")
    ],
    guard: Annotated[GuardChoice, typer.Option(help="Safety guard during training.")] = GuardChoice.SAP,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    max_steps: Annotated[int | None, typer.Option(min=1)] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    lora_r: Annotated[int | None, typer.Option(min=1)] = None,
    seed: Annotated[int | None, typer.Option(min=0)] = None,
    suffix: Annotated[
        str | None, typer.Option(help="Lower-case name tag for the fine-tuned adapter.")
    ] = None,
    validation_file: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, readable=True, help="Validation JSONL.")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Upload DATASET (JSONL) and start a fine-tuning job; prints the job id."""
    hyperparameters = {
        "epochs": epochs,
        "max_steps": max_steps,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "lora_r": lora_r,
        "seed": seed,
    }
    with api_client(url, api_key) as client:
        validation_id = upload_file(client, validation_file, "validation") if validation_file else None
        spec = build_spec(model, guard, hyperparameters, suffix, validation_id)
        with dataset.open("rb") as handle:
            job = client.post_json(
                "/jobs",
                files={"dataset": (dataset.name, handle, "application/jsonl")},
                data={"spec": json.dumps(spec)},
            )
    typer.echo(job["id"])


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _progress(job: dict[str, Any]) -> str:
    total = job.get("total_steps")
    return f"{job.get('step', 0)}/{total}" if total else str(job.get("step", 0))


def status(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    as_json: JsonFlag = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Show one job."""
    with api_client(url, api_key) as client:
        job = client.get_json(f"/jobs/{job_id}")
    if as_json:
        print_json(job)
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("id", job["id"]),
        ("status", job["status"]),
        ("stage", job.get("stage")),
        ("base model", job.get("base_model")),
        ("guard", job.get("guard")),
        ("suffix", job.get("suffix")),
        ("step", _progress(job)),
        ("loss", job.get("last_loss")),
        ("val loss", job.get("last_val_loss")),
        ("tokens/s", job.get("tokens_per_second")),
        ("created", job.get("created_at")),
        ("started", job.get("started_at")),
        ("finished", job.get("finished_at")),
    ]
    error = job.get("error")
    if error:
        rows.append(("error", f"{error.get('code')}: {error.get('message')}"))
    for name, value in rows:
        table.add_row(name, _fmt(value))
    console.print(table)


def list_jobs(
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many jobs, newest first.")] = 20,
    as_json: JsonFlag = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """List your jobs, newest first."""
    with api_client(url, api_key) as client:
        page = client.get_json("/jobs", params={"limit": limit})
    if as_json:
        print_json(page)
        return
    table = Table("id", "status", "model", "guard", "step", "loss", "created")
    for job in page.get("data", []):
        table.add_row(
            job["id"],
            job["status"],
            _fmt(job.get("base_model")),
            _fmt(job.get("guard")),
            _progress(job),
            _fmt(job.get("last_loss")),
            _fmt(job.get("created_at")),
        )
    console.print(table)
    if page.get("has_more"):
        console.print(f"(more jobs exist; showing {limit})")


def cancel(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Cancel a queued or running job."""
    with api_client(url, api_key) as client:
        job = client.post_json(f"/jobs/{job_id}/cancel")
    if not job.get("status"):
        fail(f"unexpected response: {job}")
    typer.echo(f"{job['id']}: {job['status']}")
