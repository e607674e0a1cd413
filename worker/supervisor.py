"""Supervise the training child: relay its events to the database, and always stop it at the end.

Every way out of `supervise_child` (a result, a cancel, a shutdown, a diverged or stalled run, a
database that stays away, a malformed event, a bug in this module) passes one `finally` that stops the
child's whole process group, so a job is never failed while its trainer keeps running (a GPU leak,
and with the reaper two trainers on one GPU).
"""

from __future__ import annotations

import functools
import logging
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from typing import Any, Literal

from safetune.config import get_settings
from safetune.db import session_scope
from safetune.errors import ErrorCode
from safetune.repositories import job_runs
from worker import child_lifecycle, shutdown
from worker.checkpoints import CheckpointStore
from worker.child_protocol import (
    BaseEvalEvent,
    CheckpointEvent,
    DoneEvent,
    ErrorEvent,
    EvalEvent,
    Event,
    PlanEvent,
    ProtocolError,
    ScreeningEvent,
    StageEvent,
    StageProgressEvent,
    StepEvent,
    fields_of,
    parse_event_line,
)
from worker.db_retry import with_db_retry
from worker.launch import training_launch
from worker.progress import ProgressWriter
from worker.watchdog import StepWatchdog

log = logging.getLogger("safetune.worker")

KILL_GRACE_SECONDS = 20.0  # after the STOP file, or after stdout closed: time to checkpoint and exit
TERM_GRACE_SECONDS = 5.0  # after SIGTERM to the process group, before SIGKILL


@dataclass
class ChildOutcome:
    done: DoneEvent | None = None
    error: ErrorEvent | None = None
    # "cancel" | "shutdown": the child was asked to stop; "abort": the supervisor failed the run
    # (error says why); "lost": the job is no longer ours (reaped), so nothing may be recorded.
    stop_reason: str | None = None
    return_code: int | None = None
    stderr_tail: str = ""


def supervise_child(job_id: str, job_dir: Path) -> ChildOutcome:
    settings = get_settings()
    # Stop before the reaper could hand the job to another worker: it waits stale_after_seconds.
    progress = ProgressWriter(
        job_id, heartbeat_seconds=settings.heartbeat_seconds, lease_seconds=settings.stale_after_seconds / 2
    )
    watchdog = StepWatchdog(settings.watchdog_step_factor, settings.watchdog_min_seconds)
    launch = training_launch(settings, job_dir)
    child = child_lifecycle.spawn(
        launch.argv, stdout=subprocess.PIPE, stderr_path=job_dir / "stderr.log", env=launch.env
    )
    try:
        outcome = _relay(job_id, job_dir, child, progress, watchdog, CheckpointStore(job_id))
    finally:
        child_lifecycle.stop(child, TERM_GRACE_SECONDS)
    outcome.return_code = child.returncode
    outcome.stderr_tail = _tail(job_dir / "stderr.log")
    return outcome


def _read_events(stream: Any, sink: Queue[Event | ProtocolError | None]) -> None:
    for line in stream:
        try:
            event = parse_event_line(line)
        except ProtocolError as exc:
            sink.put(exc)  # the relay fails the job; reading on would only block a dying pipe
            break
        if event is not None:
            sink.put(event)
        else:
            log.debug("non-event output from child: %s", line.rstrip())
    sink.put(None)  # end of stream


def _relay(
    job_id: str,
    job_dir: Path,
    child: subprocess.Popen[str],
    progress: ProgressWriter,
    watchdog: StepWatchdog,
    checkpoints: CheckpointStore,
) -> ChildOutcome:
    """Run until the child has exited, or until it must be stopped (then the caller stops it)."""
    events: Queue[Event | ProtocolError | None] = Queue()
    threading.Thread(target=_read_events, args=(child.stdout, events), daemon=True).start()
    outcome = ChildOutcome()
    give_up_at: float | None = None  # after a STOP request, or once stdout closed
    stream_open = True
    while stream_open or child.poll() is None:
        try:
            event: Event | ProtocolError | None | Literal[False] = events.get(timeout=0.5)
        except Empty:
            event = False
        if event is None:
            stream_open = False
            give_up_at = give_up_at or time.monotonic() + KILL_GRACE_SECONDS
        elif isinstance(event, ProtocolError):
            # A child we cannot understand cannot be trusted with the job: fail it, never guess.
            message = f"the training process broke the child protocol: {event}"
            outcome.error = ErrorEvent(code=ErrorCode.INTERNAL.code, message=message)
            outcome.stop_reason = "abort"
        elif event is not False:
            with_db_retry(
                functools.partial(_handle_event, job_id, event, outcome, progress, watchdog, checkpoints),
                what=f"event {event.kind}",
                deadline=progress.lease_deadline(),
            )
        if outcome.stop_reason is None:
            reason = outcome.stop_reason = _check_health(outcome, progress, watchdog)
            if reason in ("cancel", "shutdown"):
                # Ask politely (the child checks for this file between steps), then insist.
                (job_dir / child_lifecycle.STOP_FILE).write_text(reason)
                give_up_at = time.monotonic() + KILL_GRACE_SECONDS
        elif outcome.stop_reason in ("cancel", "shutdown") and not progress.tick()[0]:
            # While the child checkpoints and exits the job is still ours: the heartbeat goes on, or
            # the reaper would take the stopping job for a dead one and requeue it under us.
            outcome.stop_reason = "lost"
        if outcome.stop_reason == "lost":
            return outcome  # someone else owns the job now: write nothing more
        if outcome.stop_reason == "abort":
            break
        if give_up_at is not None and time.monotonic() > give_up_at:
            log.warning("training process did not exit in time; stopping it", extra={"job_id": job_id})
            break
    progress.flush()
    return outcome


def _check_health(outcome: ChildOutcome, progress: ProgressWriter, watchdog: StepWatchdog) -> str | None:
    """The reason to stop the child now, if there is one (see ChildOutcome.stop_reason)."""
    stalled = watchdog.overdue()
    if stalled is not None:
        outcome.error = ErrorEvent(code=ErrorCode.TRAINING_STALLED.code, message=stalled)
        return "abort"
    still_active, cancel = progress.tick()
    if not still_active:
        return "lost"
    if cancel:
        return "cancel"
    return "shutdown" if shutdown.requested() else None


def _handle_event(
    job_id: str,
    event: Event,
    outcome: ChildOutcome,
    progress: ProgressWriter,
    watchdog: StepWatchdog,
    checkpoints: CheckpointStore,
) -> None:
    if isinstance(event, StageEvent):
        watchdog.training(event.stage == "training")
        progress.stage(event.stage)
    elif isinstance(event, PlanEvent):
        progress.plan(event)
    elif isinstance(event, StageProgressEvent):
        watchdog.progress(step=False)
        progress.stage_progress(event)
    elif isinstance(event, StepEvent):
        watchdog.progress(step=True)
        progress.step(event)
        if event.loss is None:  # NaN/inf arrive as null (finite_json); a step always has a loss
            outcome.error = ErrorEvent(
                code=ErrorCode.TRAINING_DIVERGED.code,
                message=f"training diverged at step {event.step}: the loss is not a finite "
                "number (try a lower learning_rate or check the training data)",
            )
            outcome.stop_reason = "abort"
    elif isinstance(event, EvalEvent):
        watchdog.progress(step=False)
        progress.validation(event)
    elif isinstance(event, CheckpointEvent):
        watchdog.progress(step=False)
        checkpoints.store(event)
    elif isinstance(event, ScreeningEvent):
        with session_scope() as session:
            job_runs.add_event(
                session,
                job_id,
                "screening",
                f"data screening: {event.flagged_share:.1%} of examples flagged as harmful",
                data=fields_of(event),
                level="warning" if event.flagged_lines else "info",
            )
    elif isinstance(event, BaseEvalEvent):
        with session_scope() as session:
            job_runs.store_base_eval(
                session,
                job_id,
                key=event.key,
                base_model=event.base_model,
                # Anything not explicitly the shipped sets stays with the job's tenant.
                shared=event.scope == "shared",
                result=event.result,
            )
    elif isinstance(event, DoneEvent):
        outcome.done = event
    elif isinstance(event, ErrorEvent):
        outcome.error = event
    # "selection" and "stopped" need no action here: the stage and the exit code tell the rest.


def _tail(path: Path, limit: int = 1500) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-limit:].strip()
