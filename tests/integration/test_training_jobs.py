"""End to end over real processes: HTTP -> Postgres -> Redis -> celery worker -> training child."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from peft import PeftModel
from sqlalchemy import func, select

from safetune.db import session_scope
from safetune.models import Adapter, SafetyReport
from sap_core.modeling import load_base_model
from tests.integration.conftest import FAULT_SUFFIX, WorkerProcess, model_cache_dir, wait_for

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "sap_core" / "resources" / "datasets" / "sample_chat.jsonl"
TERMINAL = {"succeeded", "failed", "cancelled"}


def small_dataset(n: int = 12) -> bytes:
    return b"".join(SAMPLE.read_bytes().splitlines(keepends=True)[:n])


def tiny_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "base_model": "tiny-random-llama",
        "guard": "sap",
        "hyperparameters": {"max_steps": 4, "batch_size": 4, "max_seq_len": 384, "checkpoint_every": 2},
        "validation_split": 0.2,
        "evaluation": {"max_prompts": 4, "max_new_tokens": 8},
    }
    spec.update(overrides)
    return spec


def submit(
    client: TestClient, headers: dict[str, str], spec: dict[str, Any], dataset: bytes | None = None
) -> str:
    response = client.post(
        "/jobs",
        headers=headers,
        files={"dataset": ("train.jsonl", dataset or small_dataset(), "application/jsonl")},
        data={"spec": json.dumps(spec)},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def job(client: TestClient, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    return client.get(f"/jobs/{job_id}", headers=headers).json()


def events(client: TestClient, headers: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    return client.get(f"/jobs/{job_id}/events", headers=headers, params={"limit": 100}).json()["data"]


def adapter_rows(job_id: str) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Adapter).where(Adapter.job_id == job_id)) or 0


def test_job_trains_evaluates_and_serves_a_loadable_adapter(client, auth_headers, start_worker) -> None:
    worker = start_worker()
    job_id = submit(client, auth_headers, tiny_spec())
    final = wait_for(
        lambda: job(client, auth_headers, job_id), lambda j: j["status"] in TERMINAL, 240, "job to finish"
    )
    assert final["status"] == "succeeded", (final["error"], worker.log())
    assert final["step"] == final["total_steps"] == 4

    kinds = [e["type"] for e in events(client, auth_headers, job_id)]
    for expected in ("queued", "started", "metrics", "checkpoint", "stage", "succeeded"):
        assert expected in kinds, kinds
    assert kinds.count("checkpoint") == 2

    report = client.get(f"/jobs/{job_id}/safety-report", headers=auth_headers)
    assert report.status_code == 200
    body = report.json()["report"]
    assert body["schema_version"] == 1
    assert body["verdict"]["status"] in {"pass", "warn", "fail"}
    assert body["summary"]["loss_before"] > 0 and body["summary"]["loss_after"] > 0

    download = client.get(f"/jobs/{job_id}/adapter", headers=auth_headers)
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/zip"
    assert job_id in download.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    # The two PEFT files, plus the tokenizer and the exact chat template the job trained with.
    assert sorted(archive.namelist()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "chat_template.jinja",
        "tokenizer.json",
        "tokenizer_config.json",
    ]

    # The downloaded adapter, loaded by plain PEFT on the base model, reproduces the worker's logits.
    folder = model_cache_dir() / "downloads" / job_id
    archive.extractall(folder)
    base, tokenizer = load_base_model(model_cache_dir() / "tiny-random-llama", "cpu")
    tuned = PeftModel.from_pretrained(base, str(folder))
    fingerprint = body["adapter_fingerprint"]
    with torch.no_grad():
        ids = tokenizer(fingerprint["text"], return_tensors="pt")
        logits = tuned(**ids).logits[0, -1]
    assert torch.allclose(logits[:16], torch.tensor(fingerprint["last_logits_head"]), atol=1e-4)
    with tuned.disable_adapter(), torch.no_grad():
        base_logits = tuned(**ids).logits[0, -1]
    assert not torch.allclose(base_logits[:16], logits[:16], atol=1e-6), "adapter had no effect"
    # ...and it generates, like any PEFT adapter a serving stack would load.
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-random-llama"
    assert (
        config["r"] == 8
        and config["lora_alpha"] == 16
        and set(config["target_modules"]) >= {"q_proj", "v_proj"}
    )
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    generated = tuned.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]


def test_cancel_running_and_queued_jobs(client, auth_headers, start_worker) -> None:
    start_worker()
    long_spec = tiny_spec(
        guard="none", hyperparameters={"max_steps": 5000, "batch_size": 2, "max_seq_len": 512}
    )
    running_id = submit(client, auth_headers, long_spec)
    queued_id = submit(client, auth_headers, long_spec)  # one worker, concurrency 1: this one waits

    progress = wait_for(
        lambda: job(client, auth_headers, running_id),
        lambda j: j["step"] >= 2 or j["status"] in TERMINAL,
        180,
        "training steps",
    )
    assert progress["status"] == "running", progress["error"]
    assert job(client, auth_headers, queued_id)["status"] == "queued"

    assert client.post(f"/jobs/{queued_id}/cancel", headers=auth_headers).status_code == 200
    assert job(client, auth_headers, queued_id)["status"] == "cancelled"

    assert client.post(f"/jobs/{running_id}/cancel", headers=auth_headers).status_code == 200
    final = wait_for(
        lambda: job(client, auth_headers, running_id), lambda j: j["status"] in TERMINAL, 60, "cancel to land"
    )
    assert final["status"] == "cancelled"
    assert final["step"] < 5000
    # The training child is gone (its memory freed), and no adapter was stored.
    leftover = subprocess.run(["pgrep", "-f", running_id], capture_output=True, text=True).stdout.strip()
    assert leftover == ""
    assert adapter_rows(running_id) == 0
    # The queued job never started, even though its message is still in the broker.
    kinds = [e["type"] for e in events(client, auth_headers, queued_id)]
    assert "started" not in kinds and "cancelled" in kinds


def test_training_crash_fails_the_job_with_its_error(client, auth_headers, start_worker) -> None:
    start_worker()
    job_id = submit(client, auth_headers, tiny_spec(guard="none", suffix=FAULT_SUFFIX))
    final = wait_for(
        lambda: job(client, auth_headers, job_id), lambda j: j["status"] in TERMINAL, 180, "job to fail"
    )
    assert final["status"] == "failed"
    assert final["error"]["code"] == "training_failed"
    assert "injected fault" in final["error"]["message"]
    assert adapter_rows(job_id) == 0
    with session_scope() as session:
        assert session.get(SafetyReport, job_id) is None
    assert client.get(f"/jobs/{job_id}/adapter", headers=auth_headers).status_code == 404


def test_the_evaluating_stage_reports_prompts_done_and_an_eta(
    client: TestClient, auth_headers: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    """GET /jobs/{id} shows the evaluation's progress while it runs, and the events keep it."""
    worker = start_worker()
    # Options no other test uses, so the base model is evaluated here too (not read from the cache).
    job_id = submit(client, auth_headers, tiny_spec(evaluation={"max_prompts": 16, "max_new_tokens": 40}))
    seen: list[dict[str, Any]] = []

    def poll() -> dict[str, Any]:
        body = job(client, auth_headers, job_id)
        if body["status"] == "evaluating" and body["stage_progress"] is not None:
            seen.append(body["stage_progress"])
        return body

    final = wait_for(poll, lambda j: j["status"] in TERMINAL, 300, "job to finish")
    assert final["status"] == "succeeded", (final["error"], worker.log())
    assert final["stage_progress"] is None  # a finished job has no stage in progress
    assert seen, "GET /jobs/{id} never showed the evaluating stage's progress"
    # 16 harmful + 16 benign prompts, answered by the base model and by the tuned one.
    assert {p["total"] for p in seen} == {64} and all(p["stage"] == "evaluating" for p in seen)
    assert [p["done"] for p in seen] == sorted(p["done"] for p in seen)
    progress = [e for e in events(client, auth_headers, job_id) if e["type"] == "stage_progress"]
    assert progress[-1]["data"]["done"] == 64 and progress[-1]["data"]["eta_s"] == 0.0
    assert progress[-1]["message"] == "evaluating: 64/64 prompts, ETA 0:00"
