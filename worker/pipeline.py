"""run_job(job_id): claim -> prepare inputs -> supervise the training child -> store results.

Training runs in a child process (worker.training_process) that knows nothing about the database:
the job config goes in as files, events come back as JSON lines. So a cancel can kill it and free
all of its memory, a crash in training cannot take the Celery worker down, and another launcher
(torchrun, Ray) can replace the child without touching this module or the API.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from safetune.config import get_settings
from safetune.db import on_commit, session_scope
from safetune.errors import ErrorCode
from safetune.models import Job
from safetune.queue import enqueue_training
from safetune.repositories import job_queue, job_runs, storage
from sap_core.generation_engines import candidate_engines
from worker import finite_json, shutdown
from worker.archives import sha256_hex, unzip_to, zip_adapter
from worker.base_eval_keys import base_eval_needs
from worker.child_protocol import ChildRequest, ErrorEvent, write_request
from worker.db_retry import is_transient, with_db_retry
from worker.eval_device import evaluation_device
from worker.progress import HeartbeatLost
from worker.spec_mapping import evaluation_options
from worker.supervisor import ChildOutcome, supervise_child

log = logging.getLogger("safetune.worker")

VERDICTS = ("pass", "warn", "fail")


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job(job_id: str) -> None:
    """Run one job to a terminal state (or back to the queue on shutdown). Safe to call twice."""
    settings = get_settings()
    with session_scope() as session:
        busy = job_runs.tenant_at_capacity(session, job_id, settings.max_concurrent_jobs_per_tenant)
        if busy:
            # The tenant's other jobs hold all of its slots, so that one tenant cannot occupy every
            # GPU while others wait. The job waits parked, without a message; re-sending it from here
            # would multiply its messages (and spin the embedded runner). The reaper wakes it.
            job_queue.park(session, job_id)
        claimed = not busy and job_runs.claim_job(session, job_id, worker_identity())
        attempt = job_runs.load_job(session, job_id).attempt if claimed else 0
    if busy:
        log.info("tenant at its concurrent-job limit; job parked", extra={"job_id": job_id})
        return
    if not claimed:
        log.info("job not claimable (already taken, finished or cancelled)", extra={"job_id": job_id})
        return
    job_dir = settings.jobs_dir / job_id / f"attempt-{attempt}"
    log.info("job claimed", extra={"job_id": job_id, "attempt": attempt})
    try:
        _prepare_inputs(job_id, job_dir)
        outcome = supervise_child(job_id, job_dir)  # the child is stopped when this returns or raises
        _record_outcome(job_id, job_dir, outcome)
    except Exception as exc:  # never leave a claimed job running: fail it with the reason
        if isinstance(exc, HeartbeatLost) or (isinstance(exc, DBAPIError) and is_transient(exc)):
            # Nothing can be written now; the stale heartbeat lets the reaper requeue the job (it
            # resumes from its last checkpoint), which beats failing a run for a database outage.
            log.error("database unreachable: training stopped, left to the reaper", extra={"job_id": job_id})
            return
        log.exception("job crashed in the worker", extra={"job_id": job_id})
        with session_scope() as session:
            job_runs.mark_failed(session, job_id, ErrorCode.INTERNAL, f"worker error: {exc}")
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def _prepare_inputs(job_id: str, job_dir: Path) -> None:
    """Write everything the child needs into job_dir; the child never touches the database."""
    settings = get_settings()
    if job_dir.exists():
        shutil.rmtree(job_dir)
    job_dir.mkdir(parents=True)
    with session_scope() as session:
        job = job_runs.load_job(session, job_id)
        (job_dir / "train.jsonl").write_bytes(job_runs.load_file_content(session, job.training_file_id))
        val_path = eval_path = None
        if job.validation_file_id:
            val_path = job_dir / "validation.jsonl"
            val_path.write_bytes(job_runs.load_file_content(session, job.validation_file_id))
        if job.eval_file_id:
            eval_path = job_dir / "eval_prompts.jsonl"
            eval_path.write_bytes(job_runs.load_file_content(session, job.eval_file_id))
        options = evaluation_options(job.spec, evaluation_device(settings.training_device))
        resume = job_runs.latest_checkpoint_state(session, job_id)
        resume_dir = None
        if resume is not None:
            resume_dir = job_dir / "resume"
            unzip_to(resume[1], resume_dir)
            job_runs.add_event(session, job_id, "resumed", f"resuming from checkpoint at step {resume[0]}")
        request = ChildRequest(
            job_id=job_id,
            base_model=job.base_model,
            model_cache=str(settings.model_cache),
            device=settings.training_device,
            # Resolved here, once: the child evaluates with exactly these options, so its base-eval
            # cache keys are the ones _cached_base_evals looked up.
            evaluation=options,
            spec=job.spec,
            guard=job.guard,
            train_path=str(job_dir / "train.jsonl"),
            val_path=str(val_path) if val_path else None,
            eval_prompts_path=str(eval_path) if eval_path else None,
            resume_from=str(resume_dir) if resume_dir else None,
            checkpoint_dir=str(job_dir / "checkpoints"),
            output_dir=str(job_dir / "output"),
            base_eval_cache=_cached_base_evals(session, job, eval_path, options),
            eval_engine=settings.eval_engine,
        )
    write_request(job_dir, request)


def _cached_base_evals(
    session: Session, job: Job, eval_path: Path | None, options: dict[str, Any]
) -> dict[str, Any]:
    """Only the cache entries this job's child will look up: the shipped sets' entry for this
    model's current content, and the user set's entry of this job's own tenant."""
    settings = get_settings()
    try:
        # The child picks its engine on its own device (and may fall back), so every engine it might
        # use gets its entries: an entry is only ever read under its own engine's key.
        needs = [
            need
            for engine in candidate_engines(settings.eval_engine)
            for need in base_eval_needs(
                job.base_model,
                settings.model_cache,
                options,
                str(eval_path) if eval_path else None,
                engine=engine,
            )
        ]
    except ValueError:  # an unreadable prompt set: the child reports it with the job's error
        return {}
    entries: dict[str, Any] = {}
    for need in needs:
        if need.key is None:
            continue
        found = job_runs.find_base_eval(session, need.key, None if need.scope == "shared" else job.tenant_id)
        if found is not None:
            entries[need.key] = found
    return entries


def _record_outcome(job_id: str, job_dir: Path, outcome: ChildOutcome) -> None:
    if outcome.stop_reason == "lost":  # reaped while we could not heartbeat: the job is not ours now
        log.warning("job no longer active here; its outcome is not recorded", extra={"job_id": job_id})
        return
    # The result of a whole training run must survive a Postgres blip at the very end.
    with_db_retry(lambda: _record_outcome_once(job_id, outcome), what=f"recording the outcome of {job_id}")


def _record_outcome_once(job_id: str, outcome: ChildOutcome) -> None:
    with session_scope() as session:
        if outcome.stop_reason == "cancel":
            job_runs.mark_cancelled(session, job_id)
            return
        # A child that died without a result while the worker shuts down (e.g. Ctrl-C reached the
        # whole process group before the STOP file did) was interrupted, not broken: requeue it.
        interrupted = outcome.done is None and outcome.error is None and shutdown.requested()
        if (outcome.stop_reason == "shutdown" or interrupted) and outcome.done is None:
            reason = "worker shut down; the job resumes from its last checkpoint"
            if job_runs.requeue(session, job_id, reason):
                on_commit(session, lambda: enqueue_training(job_id))
        elif outcome.done is not None:
            report = finite_json.loads(Path(outcome.done.report_path).read_text())
            verdict = (report.get("verdict") or {}).get("status")
            if verdict not in VERDICTS:
                # Never publish a made-up verdict: a "warn" nobody computed reads as a real result.
                job_runs.mark_failed(
                    session,
                    job_id,
                    ErrorCode.EVALUATION_FAILED,
                    f"the safety report has no valid verdict (got {verdict!r}); no result was stored",
                )
                return
            adapter_zip = zip_adapter(Path(outcome.done.adapter_dir))
            summary = report.get("summary", {})
            job_runs.mark_succeeded(
                session,
                job_id,
                adapter_zip=adapter_zip,
                adapter_sha256=sha256_hex(adapter_zip),
                report=report,
                verdict=verdict,
                base_harmful_score=summary.get("base_harmful_score"),
                tuned_harmful_score=summary.get("tuned_harmful_score"),
                retention=storage.CheckpointRetention.from_settings(get_settings()),
            )
            return
        elif outcome.error is not None:
            code, message = _child_failure(outcome.error)
            job_runs.mark_failed(session, job_id, code, message)
            return
        else:
            job_runs.mark_failed(
                session,
                job_id,
                ErrorCode.TRAINING_FAILED,
                f"training process exited with code {outcome.return_code}: {outcome.stderr_tail}",
            )
            return


def _child_failure(error: ErrorEvent) -> tuple[ErrorCode, str]:
    """The child's error event as (code, message); a code we do not know is kept in the message."""
    code = ErrorCode.for_job_failure(error.code)
    if code is None:
        return ErrorCode.TRAINING_FAILED, f"{error.message} (unknown error code {error.code!r})"
    return code, error.message
