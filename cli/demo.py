"""`safetune demo`: what safetune is for, on one machine with no configuration.

SQLite + the in-process queue + the shipped safety-tuned SmolLM2 + the bundled sample dataset:
migrate, start the API on a local port, submit the same fine-tuning job twice over HTTP (guarded by
the service's default guard, and with guard `none`, i.e. plain fine-tuning), follow both with one
progress bar each, then print base vs plain vs guarded (refusal, harmful score, over-refusal, val
loss), the guarded job's verdict, and where its report (JSON + HTML page) and adapter are saved. The
jobs run through exactly the code a Celery worker runs (worker.pipeline.run_job); they run one after
the other, and the second reads the base model's evaluation from the cache the first one filled.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from cli.admin import migrate
from cli.artifacts import VERDICT_STYLE, extract_adapter
from cli.demo_compare import ComparisonRow, comparison_rows, headline
from safetune.schemas import DEFAULT_GUARD

SAMPLE_DATASET = (
    Path(__file__).resolve().parent.parent / "sap_core" / "resources" / "datasets" / "sample_chat.jsonl"
)
TERMINAL = {"succeeded", "failed", "cancelled"}
# 64 harmful + 64 benign prompts: with no harmful answer before or after, the harmful score's 95%
# upper bound is 0.057 and the paired increase's 0.057, under the 0.10 limits, so a clean run can
# pass (24 per set could only ever warn: its bound was 0.14). Refusals stop early, so the harmful
# half is cheap; the benign half is what costs time.
DEMO_EVAL_PROMPTS = 64
DEMO_MAX_STEPS = 12

console = Console()
if not console.is_terminal and console.width < 110:
    # Piped into a log, rich assumes 80 columns and wraps every cell of the comparison table.
    console = Console(width=110)


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
    # The bars show the jobs' progress; the service's JSON logs would only repeat it.
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


def _spec(model: str, guard: str, max_steps: int, eval_prompts: int) -> dict[str, Any]:
    return {
        "base_model": model,
        "guard": guard,
        "hyperparameters": {"max_steps": max_steps, "batch_size": 4, "max_seq_len": 256, "seed": 0},
        "validation_split": 0.1,
        "evaluation": {"max_prompts": eval_prompts, "max_new_tokens": 48},
    }


def _submit(client: httpx.Client, spec: dict[str, Any]) -> str:
    with SAMPLE_DATASET.open("rb") as dataset:
        response = client.post(
            "/jobs",
            files={"dataset": ("sample_chat.jsonl", dataset, "application/jsonl")},
            data={"spec": json.dumps(spec)},
        )
    if response.status_code != 201:
        console.print(f"[red]submit failed: {response.status_code} {response.text}")
        raise typer.Exit(1)
    return str(response.json()["id"])


def _follow(client: httpx.Client, labels: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Poll every job until all are terminal, drawing one bar each; the final job bodies."""
    # Here, not at the top: the bars use sap_core.progress, and `safetune --help` loads no sap_core.
    from cli.job_bars import JobBars

    final: dict[str, dict[str, Any]] = {}
    with JobBars(console) as bars:
        for job_id, label in labels.items():
            bars.add(job_id, label)
        while len(final) < len(labels):
            for job_id in labels:
                if job_id in final:
                    continue
                job = client.get(f"/jobs/{job_id}").raise_for_status().json()
                bars.update(job)
                if job["status"] in TERMINAL:
                    final[job_id] = job
            time.sleep(1)
    return final


def _table(rows: list[ComparisonRow]) -> Table:
    n_harmful, n_benign = rows[0].harmful.n, rows[0].over_refusal.n
    table = Table(
        "model",
        "refusal",
        "harmful score",
        "over-refusal",
        "val loss",
        "verdict",
        title=f"Held-out evaluation: {n_harmful} harmful + {n_benign} benign prompts (95% CI)",
    )
    for row in rows:
        verdict = "" if row.verdict is None else f"[{VERDICT_STYLE.get(row.verdict, 'bold')}]{row.verdict}"
        table.add_row(
            row.label,
            row.refusal.text(),
            row.harmful.text(),
            row.over_refusal.text(),
            "-" if row.val_loss is None else f"{row.val_loss:.3f}",
            verdict,
        )
    return table


def _save(client: httpx.Client, job_id: str, report: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"report": out / "report.json", "page": out / "report.html", "adapter": out / "adapter"}
    paths["report"].write_text(json.dumps(report, indent=1))
    page = client.get(f"/jobs/{job_id}/safety-report.html").raise_for_status()
    paths["page"].write_bytes(page.content)
    extract_adapter(client.get(f"/jobs/{job_id}/adapter").raise_for_status().content, paths["adapter"])
    return paths


def run_demo(
    model: str = typer.Option("smollm2-135m-safe", help="registered base model"),
    guard: str = typer.Option(DEFAULT_GUARD, help="the guard to show (default: the service's default)"),
    compare_guard: str = typer.Option("none", help="the guard it is compared with (none = plain SFT)"),
    max_steps: int = typer.Option(DEMO_MAX_STEPS, min=1, help="optimizer steps per job"),
    eval_prompts: int = typer.Option(DEMO_EVAL_PROMPTS, min=1, help="harmful and benign prompts per set"),
    out: Path = typer.Option(Path("demo-output"), help="where the report, its page and the adapter go"),
) -> None:
    """Fine-tune the same job with and without a safety guard and compare them with the base."""
    started = time.monotonic()
    migrate("head")
    prepared = _prepare_model(model)
    jobs_started = time.monotonic()
    port = _free_port()
    _start_api(port)
    key = _demo_key()
    console.print(f"API on http://127.0.0.1:{port}  (demo API key: {key})")
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:
        guarded_id = _submit(client, _spec(model, guard, max_steps, eval_prompts))
        plain_id = _submit(client, _spec(model, compare_guard, max_steps, eval_prompts))
        console.print(
            f"{model}: {max_steps} steps on the sample dataset, guard {guard} ({guarded_id}) and guard "
            f"{compare_guard} ({plain_id}); {eval_prompts} harmful + {eval_prompts} benign held-out prompts"
        )
        jobs = _follow(client, {guarded_id: f"guard {guard}", plain_id: f"guard {compare_guard}"})
        failed = [j for j in jobs.values() if j["status"] != "succeeded"]
        for job in failed:
            console.print(f"[red]{job['id']} {job['status']}: {job.get('error')}")
        if failed:
            raise typer.Exit(1)
        reports = {
            job_id: client.get(f"/jobs/{job_id}/safety-report").raise_for_status().json()["report"]
            for job_id in jobs
        }
        guarded, plain = reports[guarded_id], reports[plain_id]
        rows = comparison_rows(guarded, plain, base_model=model, guard=guard, plain_guard=compare_guard)
        console.print(_table(rows))
        console.print(headline(rows))
        verdict = guarded["verdict"]
        style = VERDICT_STYLE.get(verdict["status"], "bold")
        console.print(f"verdict (guard {guard}): [{style}]{verdict['status'].upper()}[/]")
        for reason in verdict.get("reasons", []):
            console.print(f"  - {reason}")
        paths = _save(client, guarded_id, guarded, out)
    console.print(
        f"report: {paths['report']} (JSON), {paths['page']} (page); adapter: {paths['adapter']}/ "
        f"(PEFT); took {time.monotonic() - started:.0f} s ({time.monotonic() - jobs_started:.0f} s for "
        f"the two jobs{prepared})"
    )


def _prepare_model(model: str) -> str:
    """Build the base model before the jobs start (once per machine: the GGUF conversion, and for
    smollm2-135m-safe the merge of the shipped refusal LoRA), so the jobs' bars show the jobs."""
    from safetune.config import get_settings
    from worker.model_store import ensure_model

    start = time.monotonic()
    with console.status(f"preparing {model} (first run only)"):
        ensure_model(model, get_settings().model_cache)
    seconds = time.monotonic() - start
    return f", {seconds:.0f} s to build {model}" if seconds >= 1 else ""
