"""The official `openai` SDK against a real `uvicorn api.main:app` and a real celery worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.integration.conftest import REPO, wait_for
from tests.live_api import live_api

pytestmark = pytest.mark.integration

SAMPLE = REPO / "sap_core" / "resources" / "datasets" / "sample_chat.jsonl"
TERMINAL = {"succeeded", "failed", "cancelled"}
# 8 examples, batch 4, max 2 steps, no periodic checkpoints (the job still lists its final one);
# the smallest safety evaluation.
SAFETY = {
    "guard": "none",
    "hyperparameters": {"max_steps": 2, "checkpoint_every": 0, "max_seq_len": 384},
    "evaluation": {"max_prompts": 4, "max_new_tokens": 8},
}


@pytest.fixture(scope="module")
def server(worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`uvicorn api.main:app` on a free port, against the per-run Postgres DB and Redis db."""
    env = {**worker_env, "SAFETUNE_RATE_LIMIT_PER_MINUTE": "100000"}
    with live_api(env, tmp_path_factory.mktemp("uvicorn") / "uvicorn.log") as url:
        yield url


@pytest.fixture
def sdk(server: str, make_tenant: Callable[..., tuple[str, str]]) -> OpenAI:
    return OpenAI(base_url=f"{server}/v1", api_key=make_tenant()[1], max_retries=0, timeout=30)


def test_openai_sdk_end_to_end(sdk: OpenAI, start_worker: Callable[..., Any]) -> None:
    worker = start_worker()
    data = b"".join(SAMPLE.read_bytes().splitlines(keepends=True)[:8])
    uploaded = sdk.files.create(file=("train.jsonl", data), purpose="fine-tune")
    assert (uploaded.object, uploaded.purpose, uploaded.status) == ("file", "fine-tune", "processed")
    assert sdk.files.retrieve(uploaded.id).bytes == uploaded.bytes

    job = sdk.fine_tuning.jobs.create(
        model="tiny-random-llama",
        training_file=uploaded.id,
        hyperparameters={"n_epochs": 1, "batch_size": 4},
        suffix="sdk",
        extra_body={"safety": SAFETY},
    )
    assert job.status == "queued" and job.hyperparameters.n_epochs == 1
    # One worker at concurrency 1: a second job waits in the queue, and cancelling it is immediate.
    second = sdk.fine_tuning.jobs.create(model="tiny-random-llama", training_file=uploaded.id)
    cancelled = sdk.fine_tuning.jobs.cancel(second.id)
    assert cancelled.status == "cancelled", cancelled

    listed = [j.id for j in sdk.fine_tuning.jobs.list(limit=1)]  # auto-pagination through `after`
    assert listed == [second.id, job.id]
    with pytest.raises(openai.ConflictError) as in_use:  # the first job has not finished
        sdk.files.delete(uploaded.id)
    assert in_use.value.code == "file_in_use"

    final = wait_for(
        lambda: sdk.fine_tuning.jobs.retrieve(job.id).model_dump(),
        lambda j: j["status"] in TERMINAL,
        150,
        "the job to finish",
    )
    assert final["status"] == "succeeded", (final["error"], worker.log())
    assert final["fine_tuned_model"] == f"ft:tiny-random-llama:sdk:{job.id}"
    assert final["safety"]["verdict"] in {"pass", "warn", "fail"}
    assert final["safety"]["report_url"].endswith(f"/jobs/{job.id}/safety-report")

    events = sdk.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert events[0].data["event"] == "succeeded"  # newest first
    assert any(e.type == "metrics" and e.data.get("train_loss") is not None for e in events)
    assert [e.id for e in events] == sorted((e.id for e in events), key=lambda i: -int(i.split("-")[1]))

    checkpoints = sdk.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [2]  # the final one, with checkpoint_every 0
    final_checkpoint = checkpoints[0]
    assert final_checkpoint.fine_tuning_job_id == job.id and final_checkpoint.metrics.train_loss is not None
    assert final_checkpoint.fine_tuned_model_checkpoint == f"{final['fine_tuned_model']}:ckpt-step-2"

    assert final["trained_tokens"] > 0 and len(final["result_files"]) == 1
    (result_id,) = final["result_files"]
    result = sdk.files.retrieve(result_id)
    assert (result.purpose, result.filename) == ("fine-tune-results", "step_metrics.csv")
    rows = [line.split(",") for line in sdk.files.content(result_id).text.splitlines()]
    assert rows[0][:3] == ["step", "train_loss", "valid_loss"]
    assert [int(row[0]) for row in rows[1:]] == [1, 2]
    assert float(rows[2][1]) == pytest.approx(final_checkpoint.metrics.train_loss)
    assert sum(int(row[4]) for row in rows[1:]) == final["trained_tokens"]

    models = [m.id for m in sdk.models.list()]
    assert models[0] == "tiny-random-llama" and models[-1] == final["fine_tuned_model"]
    assert sdk.models.retrieve(final["fine_tuned_model"]).owned_by == final["organization_id"]
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve(f"ft:tiny-random-llama:other:{job.id}")

    second_upload = sdk.files.create(file=("more.jsonl", data), purpose="fine-tune")
    tuning = [f.id for f in sdk.files.list(purpose="fine-tune", limit=1)]  # auto-pagination
    assert tuning == [second_upload.id, uploaded.id]
    assert {f.id for f in sdk.files.list()} == {second_upload.id, uploaded.id, result_id}
    assert sdk.files.content(uploaded.id).content.count(b"\n") == 8
    deleted = sdk.files.delete(uploaded.id)  # its jobs have finished: allowed
    assert (deleted.id, deleted.object, deleted.deleted) == (uploaded.id, "file", True)
    assert [f.id for f in sdk.files.list(purpose="fine-tune")] == [second_upload.id]
    assert sdk.fine_tuning.jobs.retrieve(job.id).training_file == uploaded.id
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(uploaded.id)

    with pytest.raises(openai.NotFoundError) as missing:
        sdk.fine_tuning.jobs.retrieve("ftjob-missing")
    assert missing.value.code == "job_not_found"
    with pytest.raises(openai.UnprocessableEntityError) as unknown:
        sdk.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=uploaded.id)
    assert (unknown.value.code, unknown.value.param, unknown.value.type) == (
        "base_model_unknown",
        "model",
        "invalid_request_error",
    )
