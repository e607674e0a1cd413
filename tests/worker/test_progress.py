"""ProgressWriter keeps every step's metrics, and a job's success turns them into its result file
(the metrics CSV), trained_tokens and a final checkpoint; driven with the events the training child
emits, against the real database."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from safetune.db import session_scope
from safetune.models import Checkpoint, Job, StoredFile
from safetune.repositories import job_runs
from safetune.repositories import jobs as jobs_repo
from safetune.repositories.storage import CheckpointRetention
from worker.child_protocol import EvalEvent, PlanEvent, StepEvent
from worker.progress import ProgressWriter

KEEP_MANY = CheckpointRetention(keep_last=100, keep_best=True)


def step(n: int, loss: float, tokens_per_second: float, elapsed: float) -> StepEvent:
    return StepEvent(
        step=n,
        total_steps=3,
        loss=loss,
        lr=1e-4 * n,
        tokens_per_second=tokens_per_second,
        elapsed_seconds=elapsed,
    )


def run_attempt(job_id: str, events: list[StepEvent | EvalEvent]) -> None:
    writer = ProgressWriter(job_id, heartbeat_seconds=0.0)
    writer.plan(PlanEvent(total_steps=3, num_examples=8, world_size=1))
    for event in events:
        if isinstance(event, EvalEvent):
            writer.validation(event)
        else:
            writer.step(event)
        assert writer.tick() == (True, False)  # writes what is pending, every time (heartbeat 0 s)
    writer.flush()


def succeed(job_id: str) -> None:
    with session_scope() as session:
        assert job_runs.mark_succeeded(
            session,
            job_id,
            adapter_zip=b"final-adapter",
            adapter_sha256="f" * 64,
            report={"schema_version": 1},
            verdict="pass",
            base_harmful_score=None,
            tuned_harmful_score=None,
            retention=KEEP_MANY,
        )


def claim(job_id: str) -> None:
    with session_scope() as session:
        assert job_runs.claim_job(session, job_id, "test-worker")


def result_rows(job_id: str) -> tuple[Job, StoredFile, list[dict[str, str]]]:
    with session_scope() as session:
        job = session.execute(select(Job).where(Job.id == job_id)).scalar_one()
        assert job.result_file_id is not None
        stored = session.execute(select(StoredFile).where(StoredFile.id == job.result_file_id)).scalar_one()
        content = session.execute(select(StoredFile.content).where(StoredFile.id == stored.id)).scalar_one()
    return job, stored, list(csv.DictReader(io.StringIO(content.decode())))


def test_success_stores_the_metrics_csv_trained_tokens_and_the_final_checkpoint(
    worker_settings: Callable[..., None], make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    claim(job_id)
    # The child reports a step's validation before the step itself (sap_core.train.finetune).
    run_attempt(
        job_id,
        [
            step(1, 2.0, tokens_per_second=100.0, elapsed=2.0),  # 200 tokens in 2 s
            EvalEvent(step=2, val_loss=1.75),
            step(2, 1.5, tokens_per_second=50.0, elapsed=3.0),  # 50 in the next 1 s
            step(3, 1.25, tokens_per_second=10.0, elapsed=3.5),  # 5 in 0.5 s
        ],
    )
    succeed(job_id)

    job, stored, rows = result_rows(job_id)
    assert job.trained_tokens == 255
    assert (stored.tenant_id, stored.purpose, stored.format, stored.num_examples) == (
        job.tenant_id,
        "fine-tune-results",
        "csv",
        3,
    )
    assert list(rows[0]) == ["step", "train_loss", "valid_loss", "learning_rate", "tokens", "elapsed_seconds"]
    assert [(r["step"], r["train_loss"], r["valid_loss"], r["tokens"]) for r in rows] == [
        ("1", "2.0", "", "200"),
        ("2", "1.5", "1.75", "50"),
        ("3", "1.25", "", "5"),
    ]
    with session_scope() as session:
        checkpoints = session.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)).scalars().all()
        assert [(c.step, c.train_loss, c.sha256) for c in checkpoints] == [(3, 1.25, "f" * 64)]
        adapter = session.execute(
            select(Checkpoint.adapter_zip).where(Checkpoint.job_id == job_id)
        ).scalar_one()
    assert adapter == b"final-adapter"


def save_checkpoint(job_id: str, at: int, sha: str) -> None:
    with session_scope() as session:
        job_runs.save_checkpoint(
            session,
            job_id,
            step=at,
            train_loss=1.0,
            val_loss=None,
            adapter_zip=b"z",
            state_zip=b"s",
            sha256=sha,
            retention=KEEP_MANY,
        )


def test_a_resumed_attempt_replaces_the_steps_it_repeats_and_a_saved_final_checkpoint_is_kept(
    worker_settings: Callable[..., None], make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    claim(job_id)
    run_attempt(job_id, [step(1, 2.0, 100.0, 1.0), step(2, 1.9, 100.0, 2.0)])
    save_checkpoint(job_id, 1, "a" * 64)
    # The worker died after step 2; the next attempt resumes from the step-1 checkpoint, its clock
    # starts again, and checkpoint_every saves step 3 itself.
    with session_scope() as session:
        assert job_runs.requeue(session, job_id, "test")
    claim(job_id)
    run_attempt(job_id, [step(2, 1.5, 10.0, 1.0), step(3, 1.0, 10.0, 2.0)])
    save_checkpoint(job_id, 3, "c" * 64)
    succeed(job_id)

    job, _stored, rows = result_rows(job_id)
    assert [(r["step"], r["train_loss"], r["tokens"]) for r in rows] == [
        ("1", "2.0", "100"),
        ("2", "1.5", "10"),
        ("3", "1.0", "10"),
    ]
    assert job.trained_tokens == 120
    with session_scope() as session:
        found = session.execute(
            select(Checkpoint.step, Checkpoint.sha256)
            .where(Checkpoint.job_id == job_id)
            .order_by(Checkpoint.step)
        ).all()
    assert [tuple(c) for c in found] == [(1, "a" * 64), (3, "c" * 64)]  # no second copy of step 3


def test_the_heartbeat_interval_is_the_setting_not_capped_at_one_second(
    make_job: Callable[..., str],
) -> None:
    """ProgressWriter used min(heartbeat_seconds, 1.0): SAFETUNE_HEARTBEAT_SECONDS above 1 did nothing."""
    job_id = make_job()
    claim(job_id)
    writer = ProgressWriter(job_id, heartbeat_seconds=3.0)

    def heartbeat_at() -> object:
        with session_scope() as session:
            return session.scalar(select(Job.heartbeat_at).where(Job.id == job_id))

    assert writer.tick() == (True, False)  # the first tick writes
    first = heartbeat_at()
    time.sleep(1.3)
    assert writer.tick() == (True, False)
    assert heartbeat_at() == first  # 1.3 s < 3 s: no write yet
    time.sleep(1.9)
    writer.tick()
    assert heartbeat_at() != first


def test_stage_progress_lands_on_the_row_each_tick_and_as_an_event_each_tenth(
    make_job: Callable[..., str],
) -> None:
    from tests.worker.conftest import set_columns
    from worker.child_protocol import Event, StageProgressEvent
    from worker.stage_progress import StageProgress

    job_id = make_job()
    set_columns(job_id, status="running")
    writer = ProgressWriter(job_id, heartbeat_seconds=0.0)
    writer.stage("evaluating")

    # The child's side: 200 answers (base and tuned over 2 sets of 50), reported a batch of 5 at a time.
    def supervisor(event: Event) -> None:  # what supervisor._handle_event does with this kind
        assert isinstance(event, StageProgressEvent)
        writer.stage_progress(event)

    child = StageProgress(supervisor, "evaluating", 200, every_s=0)
    child.begin()
    seen: list[dict[str, Any]] = []
    for done in range(5, 201, 5):
        child.update(done, 200)
        writer.tick()
        with session_scope() as session:
            row = session.get(Job, job_id)
            assert row is not None and row.stage_progress is not None
            seen.append(row.stage_progress)
    assert seen[0] == {"stage": "evaluating", "done": 5, "total": 200, "eta_s": seen[0]["eta_s"]}
    assert [s["done"] for s in seen] == list(range(5, 201, 5))
    assert seen[-1]["eta_s"] == 0.0
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        rows, _ = jobs_repo.list_events(session, job.tenant_id, job_id, limit=1000)
        messages = [e.message for e in rows if e.type == "stage_progress"]
    # 0/200 announced, then one event per tenth: 20/200 ... 200/200.
    assert [m.split()[1] for m in messages] == ["0/200"] + [f"{20 * i}/200" for i in range(1, 11)]
    assert messages[-1] == "evaluating: 200/200 prompts, ETA 0:00"
    writer.stage("saving")  # a new stage starts without the old one's progress
    with session_scope() as session:
        assert session.get(Job, job_id).stage_progress is None  # type: ignore[union-attr]
