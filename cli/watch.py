"""`safetune watch JOB`: poll the job and its events, draw a progress bar, exit when it is terminal."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cli.client import DEFAULT_URL, ApiClient, ApiKeyOption, UrlOption, api_client

TERMINAL = {"succeeded": 0, "failed": 1, "cancelled": 2}
EVENTS_PAGE = 100

console = Console()


def _new_events(client: ApiClient, job_id: str, after: int | None) -> list[dict[str, Any]]:
    """Every event after id `after`, oldest first (the API pages with `after` + `has_more`)."""
    events: list[dict[str, Any]] = []
    while True:
        params: dict[str, Any] = {"limit": EVENTS_PAGE}
        if after is not None:
            params["after"] = after
        page = client.get_json(f"/jobs/{job_id}/events", params=params)
        batch: list[dict[str, Any]] = page.get("data", [])
        events.extend(batch)
        if not page.get("has_more") or not batch:
            return events
        after = batch[-1]["id"]


def _describe(job: dict[str, Any]) -> str:
    stage = job.get("stage")
    loss = job.get("last_loss")
    parts = [job["status"] + (f"/{stage}" if stage else "")]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if job.get("last_val_loss") is not None:
        parts.append(f"val {job['last_val_loss']:.4f}")
    return "  ".join(parts)


def watch(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between polls.")] = 2.0,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Follow a job until it ends. Exit 0 succeeded, 1 failed, 2 cancelled."""
    last_event: int | None = None
    with (
        api_client(url, api_key) as client,
        Progress(
            TextColumn("[bold]{task.fields[job]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as progress,
    ):
        task = progress.add_task("", total=None, job=job_id)
        while True:
            job = client.get_json(f"/jobs/{job_id}")
            for event in _new_events(client, job_id, last_event):
                last_event = event["id"]
                level = event.get("level", "info")
                style = {"error": "red", "warning": "yellow"}.get(level, "dim")
                progress.console.print(f"[{style}]{event.get('created_at', '')}  {event.get('message', '')}")
            progress.update(
                task, total=job.get("total_steps"), completed=job.get("step") or 0, description=_describe(job)
            )
            if job["status"] in TERMINAL:
                break
            time.sleep(interval)
    code = TERMINAL[job["status"]]
    if job["status"] == "failed" and job.get("error"):
        console.print(f"[red]failed: {job['error'].get('code')}: {job['error'].get('message')}")
    else:
        console.print(f"{job_id}: {job['status']}")
    raise typer.Exit(code)
