"""One rich progress bar per job: stage, step/total (or prompts done/total), loss and ETA.

The bar follows what `GET /jobs/{id}` says: during training its total is the job's optimizer steps;
during a stage that reports `stage_progress` (the safety evaluation) it counts that stage's units.
Each time the stage changes the bar is reset, so rich's ETA is estimated from the current stage's
rate only (a training step and an evaluated prompt take very different times). Where the server
sends its own ETA (`stage_progress.eta_s`) that one is shown.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

from sap_core.progress import format_seconds


class EtaColumn(ProgressColumn):
    """The server's ETA when it sent one, else rich's estimate from this stage's rate."""

    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta_s")
        if eta is None:
            eta = task.time_remaining
        if task.finished:
            return Text("done", style="green")
        return Text("ETA -" if eta is None else f"ETA {format_seconds(float(eta))}", style="cyan")


def bar_state(job: dict[str, Any]) -> dict[str, Any]:
    """What the bar shows for one `GET /jobs/{id}` body: stage, completed/total, loss, ETA."""
    status, stage = job["status"], job.get("stage")
    progress = job.get("stage_progress") or None
    loss = job.get("last_loss")
    parts = [stage or status]
    if loss is not None:
        parts.append(f"loss {loss:.3f}")
    if job.get("last_val_loss") is not None:
        parts.append(f"val {job['last_val_loss']:.3f}")
    if progress and progress.get("stage") == stage:
        completed, total, eta = progress["done"], progress["total"], progress.get("eta_s")
        unit = "prompts"
    else:
        completed, total, eta = job.get("step") or 0, job.get("total_steps"), None
        unit = "steps"
    if status in ("succeeded", "failed", "cancelled"):
        parts = [status] + parts[1:]
        total = total or 1
        completed = total if status == "succeeded" else completed
    return {
        "phase": f"{stage or status}:{unit}",
        "completed": completed,
        "total": total,
        "eta_s": eta,
        "description": "  ".join(parts),
    }


class JobBars:
    """A rich Progress with one row per job; `update(job)` after each poll."""

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.fields[label]:<22}"),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            EtaColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.phases: dict[str, str] = {}

    def __enter__(self) -> JobBars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def add(self, job_id: str, label: str) -> None:
        self.tasks[job_id] = self.progress.add_task("queued", total=None, label=label, eta_s=None)

    def update(self, job: dict[str, Any]) -> None:
        task = self.tasks[job["id"]]
        state = bar_state(job)
        if self.phases.get(job["id"]) != state["phase"]:
            self.phases[job["id"]] = state["phase"]
            self.progress.reset(task, total=state["total"], completed=state["completed"])
        self.progress.update(
            task,
            total=state["total"],
            completed=state["completed"],
            description=state["description"],
            eta_s=state["eta_s"],
        )
