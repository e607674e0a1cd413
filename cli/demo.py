"""`safetune demo`: the whole service on one machine with no configuration.

SQLite + the in-process queue + the bundled SmolLM2 + the bundled sample dataset: migrate, start the
API on a local port, submit a SAP-guarded job over HTTP, follow it, print the safety report and save
the adapter. The job runs through exactly the code a Celery worker runs (worker.pipeline.run_job).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import typer

from cli.admin import migrate

SAMPLE_DATASET = (
    Path(__file__).resolve().parent.parent / "sap_core" / "resources" / "datasets" / "sample_chat.jsonl"
)
TERMINAL = {"succeeded", "failed", "cancelled"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_api(port: int) -> None:
    import uvicorn

    from api.main import create_app
    from worker import embedded

    embedded.start()  # registers the in-process runner with safetune.queue
    app = create_app()
    # The demo narrates the job from its events; the service's JSON logs would only repeat them.
    logging.getLogger("safetune").setLevel(logging.WARNING)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, name="safetune-api", daemon=True).start()
    for _ in range(100):
        if server.started:
            return
        time.sleep(0.1)
    raise RuntimeError("the API did not start")


def _demo_key() -> str:
    """A fresh key for the `demo` tenant (created on first run); printed once, stored hashed."""
    from safetune.db import session_scope
    from safetune.repositories.tenants import create_api_key, create_tenant, get_tenant_by_name

    with session_scope() as session:
        tenant = get_tenant_by_name(session, "demo") or create_tenant(session, "demo")
        _record, key = create_api_key(session, tenant.id)
    return key


def _follow(client: httpx.Client, job_id: str) -> dict[str, Any]:
    last_event = 0
    while True:
        job = client.get(f"/jobs/{job_id}").raise_for_status().json()
        events = client.get(f"/jobs/{job_id}/events", params={"after": last_event, "limit": 100}).json()
        for event in events.get("data", []):
            last_event = max(last_event, int(event["id"]))
            typer.echo(f"  [{event['type']}] {event['message']}")
        if job["status"] in TERMINAL:
            return job
        time.sleep(2)


def _print_report(report: dict[str, Any]) -> None:
    summary = report.get("summary", {})
    verdict = report.get("verdict", {})
    typer.echo("\n=== safety report ===")
    typer.echo(f"verdict: {verdict.get('status')}  {'; '.join(verdict.get('reasons', []))}")
    for key in sorted(summary):
        typer.echo(f"  {key:32s} {summary[key]}")
    typer.echo("(full report JSON: GET /jobs/{id}/safety-report)")


def run_demo(
    model: str = typer.Option("smollm2-135m-instruct", help="registered base model"),
    guard: str = typer.Option("sap", help="sap | ema | none"),
    max_steps: int = typer.Option(12, help="optimizer steps (CPU: ~10 s each for SmolLM2 with SAP)"),
    eval_prompts: int = typer.Option(24, help="harmful and benign prompts per set in the safety eval"),
    out: Path = typer.Option(Path("demo-adapter"), help="where to extract the adapter"),
) -> None:
    """Run the main job end to end on the embedded default and print the safety report."""
    migrate("head")
    port = _free_port()
    _start_api(port)
    key = _demo_key()
    typer.echo(f"API on http://127.0.0.1:{port}  (demo API key: {key})")
    spec = {
        "base_model": model,
        "guard": guard,
        "hyperparameters": {"max_steps": max_steps, "batch_size": 4, "max_seq_len": 256, "seed": 0},
        "validation_split": 0.1,
        "evaluation": {"max_prompts": eval_prompts, "max_new_tokens": 48},
    }
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:
        with SAMPLE_DATASET.open("rb") as dataset:
            response = client.post(
                "/jobs",
                files={"dataset": ("sample_chat.jsonl", dataset, "application/jsonl")},
                data={"spec": json.dumps(spec)},
            )
        if response.status_code != 201:
            typer.echo(f"submit failed: {response.status_code} {response.text}", err=True)
            raise typer.Exit(1)
        job_id = response.json()["id"]
        typer.echo(f"submitted {job_id} ({model}, guard={guard}); following progress…")
        job = _follow(client, job_id)
        if job["status"] != "succeeded":
            typer.echo(f"job {job['status']}: {job.get('error')}", err=True)
            raise typer.Exit(1)
        _print_report(client.get(f"/jobs/{job_id}/safety-report").raise_for_status().json()["report"])
        archive = client.get(f"/jobs/{job_id}/adapter").raise_for_status().content
        zipfile.ZipFile(BytesIO(archive)).extractall(out)
        typer.echo(f"adapter saved to {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))})")
