"""Turns the child's step/stage events into throttled job-row updates, events and heartbeats."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from sqlalchemy.exc import DBAPIError

from safetune.db import session_scope
from safetune.models import JobStatus
from safetune.repositories import job_results, job_runs
from sap_core.progress import format_seconds
from worker.child_protocol import EvalEvent, PlanEvent, StageProgressEvent, StepEvent, fields_of
from worker.db_retry import is_transient

log = logging.getLogger("safetune.worker")

METRIC_EVENTS_PER_JOB = 20
# A long stage's progress lands on the job row at every heartbeat; as events only every tenth.
STAGE_PROGRESS_EVENTS = 10


class HeartbeatLost(RuntimeError):
    """The job row could not be heartbeated for longer than the lease: training must stop."""


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "n/a"  # null = not finite


class ProgressWriter:
    """Owns the DB side of progress for one job. Every write is its own short transaction.

    `heartbeat_seconds` (SAFETUNE_HEARTBEAT_SECONDS) is how often `tick` touches the job row: the
    heartbeat, pending progress and the cancel check share one short transaction, so it also bounds
    how long a cancel waits. `lease_seconds` bounds how long heartbeats may fail (Postgres away)
    before `tick` raises HeartbeatLost: past it the reaper may requeue the job, and another worker
    may train it.
    """

    def __init__(self, job_id: str, heartbeat_seconds: float, lease_seconds: float = math.inf) -> None:
        self.job_id = job_id
        self.heartbeat_seconds = heartbeat_seconds
        self.lease_seconds = lease_seconds
        self.total_steps: int | None = None
        self.pending: dict[str, Any] = {}
        # step -> metrics not yet written (job_step_metrics, for the job's result file).
        self.metrics: dict[int, dict[str, Any]] = {}
        self.last_elapsed = 0.0
        self.last_poll = 0.0
        self.last_heartbeat = time.monotonic()
        self.stage_progress_tenth: int | None = None  # the tenth last announced as an event

    def lease_deadline(self) -> float:
        """time.monotonic() by which a heartbeat must land, or this supervisor gives the job up."""
        return self.last_heartbeat + self.lease_seconds

    def stage(self, stage: str) -> None:
        status = JobStatus.EVALUATING if stage == "evaluating" else None
        self.pending.pop("stage_progress", None)  # the old stage's progress must not outlive it
        self.stage_progress_tenth = None
        with session_scope() as session:
            job_runs.set_stage(session, self.job_id, stage, status)
            job_runs.add_event(session, self.job_id, "stage", f"stage: {stage}", data={"stage": stage})

    def plan(self, event: PlanEvent) -> None:
        self.total_steps = event.total_steps
        with session_scope() as session:
            job_runs.heartbeat(session, self.job_id, total_steps=self.total_steps)
            job_runs.add_event(
                session,
                self.job_id,
                "plan",
                f"{self.total_steps} optimizer steps over {event.num_examples} examples",
                data=fields_of(event),
            )

    def step(self, event: StepEvent) -> None:
        step = event.step
        self.pending.update(step=step, last_loss=event.loss, tokens_per_second=event.tokens_per_second)
        self.metrics.setdefault(step, {}).update(
            train_loss=event.loss,
            learning_rate=event.lr,
            tokens=self._step_tokens(event),
            elapsed_seconds=event.elapsed_seconds,
        )
        total = self.total_steps or event.total_steps or step
        every = max(1, total // METRIC_EVENTS_PER_JOB)
        if step % every == 0 or step == total:
            with session_scope() as session:
                job_runs.add_event(
                    session,
                    self.job_id,
                    "metrics",
                    f"step {step}/{total}: loss {_fmt(event.loss)}",
                    data=fields_of(event),
                )

    def stage_progress(self, event: StageProgressEvent) -> None:
        """The child's done/total/ETA of a long stage: on the row at the next tick, as an event
        each time another tenth is done (and at the end)."""
        done, total, eta = event.done, event.total, event.eta_s
        self.pending["stage_progress"] = {"stage": event.stage, "done": done, "total": total, "eta_s": eta}
        tenth = STAGE_PROGRESS_EVENTS * done // total if total else STAGE_PROGRESS_EVENTS
        announced = self.stage_progress_tenth
        if announced is not None and tenth <= announced and done < total:
            return
        self.stage_progress_tenth = tenth
        eta_text = "" if eta is None else f", ETA {format_seconds(eta)}"
        with session_scope() as session:
            job_runs.add_event(
                session,
                self.job_id,
                "stage_progress",
                f"{event.stage}: {done}/{total} {event.unit}{eta_text}",
                data=fields_of(event),
            )

    def _step_tokens(self, event: StepEvent) -> int | None:
        """Tokens of one step, from the child's throughput and the time since its previous step.

        The child reports tokens/s and the seconds since training (or the resumed attempt) began,
        not the count itself, so this is an estimate: the interval also holds the previous step's
        validation or checkpoint, if any, which over-counts those steps.
        """
        rate, elapsed = event.tokens_per_second, event.elapsed_seconds
        if rate is None or elapsed is None:
            return None
        interval, self.last_elapsed = max(0.0, elapsed - self.last_elapsed), elapsed
        return round(rate * interval)

    def validation(self, event: EvalEvent) -> None:
        self.metrics.setdefault(event.step, {})["valid_loss"] = event.val_loss
        self.pending["last_val_loss"] = event.val_loss
        with session_scope() as session:
            job_runs.add_event(
                session,
                self.job_id,
                "validation",
                f"step {event.step}: validation loss {_fmt(event.val_loss)}",
                data=fields_of(event),
            )

    def tick(self) -> tuple[bool, bool]:
        """Heartbeat + pending progress + cancel check, throttled. Returns (still_active, cancel)."""
        now = time.monotonic()
        if now - self.last_poll < self.heartbeat_seconds:
            return True, False
        self.last_poll = now
        try:
            with session_scope() as session:
                active = job_runs.heartbeat(session, self.job_id, **self.pending)
                job_results.record_step_metrics(session, self.job_id, self.metrics)
                cancel = job_runs.cancel_requested(session, self.job_id)
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            if now > self.lease_deadline():
                raise HeartbeatLost(
                    f"no heartbeat written for {now - self.last_heartbeat:.0f} s (database unavailable)"
                ) from exc
            # Postgres is briefly away: keep training and the pending progress; the next tick retries.
            log.warning("heartbeat skipped: database unavailable", extra={"job_id": self.job_id})
            return True, False
        self.last_heartbeat = now
        self.pending, self.metrics = {}, {}
        return active, cancel

    def flush(self) -> None:
        if self.pending or self.metrics:
            with session_scope() as session:
                job_runs.heartbeat(session, self.job_id, **self.pending)
                job_results.record_step_metrics(session, self.job_id, self.metrics)
            self.pending, self.metrics = {}, {}
