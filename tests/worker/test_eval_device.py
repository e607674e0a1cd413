"""The default evaluation size follows the device, and the supervisor and the child agree on it.

The supervisor (worker.pipeline) resolves the size once and writes the resolved options into the
child's request; it looks up the base-evaluation cache with exactly those options. Real Postgres, a
model folder in a private model cache; the last test runs real training children on tiny-random-llama.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from safetune.db import session_scope
from safetune.models import BaseEvalCache, SafetyReport
from sap_core.eval_size import CPU_MAX_PROMPTS
from tests.worker.test_base_eval_cache import (
    MODEL,
    SENTINEL,
    cached,
    fake_model,
    keys_for,
    model_cache,
    store,
)
from tests.worker.test_supervisor import load, run
from worker.eval_device import evaluation_device, gpu_visible
from worker.pipeline import _prepare_inputs

__all__ = ["model_cache"]  # the fixture, re-used

OPTIONS = {"max_new_tokens": 2}  # no max_prompts: the device decides


def prepared(job_id: str, tmp_path: Path) -> dict[str, Any]:
    job_dir = tmp_path / "prepared" / uuid.uuid4().hex
    _prepare_inputs(job_id, job_dir)
    request: dict[str, Any] = json.loads((job_dir / "request.json").read_text())
    return request


def test_auto_probes_for_a_visible_gpu(tmp_path: Path) -> None:
    assert evaluation_device("cpu") == "cpu" and evaluation_device("cuda") == "cuda"
    assert evaluation_device("auto", gpu=True) == "cuda"
    assert evaluation_device("auto", gpu=False) == "cpu"
    with pytest.raises(ValueError, match="training_device"):
        evaluation_device("tpu")
    assert not gpu_visible(tmp_path, {})
    (tmp_path / "nvidia0").touch()
    assert gpu_visible(tmp_path, {})
    assert not gpu_visible(tmp_path, {"CUDA_VISIBLE_DEVICES": ""})  # hidden from this process


def test_the_request_carries_the_devices_size_and_the_cache_entry_for_it(
    model_cache: Path, worker_settings: Callable[..., None], make_job: Callable[..., str], tmp_path: Path
) -> None:
    fake_model(model_cache)
    job_id = make_job(spec={"evaluation": OPTIONS})
    cpu_options = {**OPTIONS, "max_prompts": CPU_MAX_PROMPTS}
    (cpu_key,) = keys_for(model_cache, None, cpu_options)
    (gpu_key,) = keys_for(model_cache, None, {**OPTIONS, "max_prompts": None})
    assert cpu_key is not None and gpu_key is not None and cpu_key != gpu_key
    store(job_id, cpu_key, shared=True, marker="cpu-sized")
    store(job_id, gpu_key, shared=True, marker="full sets")

    request = prepared(job_id, tmp_path)  # model_cache set training_device=cpu
    assert request["evaluation"]["max_prompts"] == CPU_MAX_PROMPTS
    assert keys_for(model_cache, None, request["evaluation"]) == [cpu_key]  # what the child computes
    assert request["base_eval_cache"] == {cpu_key: {"marker": "cpu-sized"}}

    worker_settings(training_device="cuda")
    request = prepared(job_id, tmp_path)
    assert request["evaluation"]["max_prompts"] is None
    assert request["base_eval_cache"] == {gpu_key: {"marker": "full sets"}}

    # A size the job sets itself wins on every device.
    own = make_job(spec={"evaluation": {**OPTIONS, "max_prompts": 3}})
    assert prepared(own, tmp_path)["evaluation"]["max_prompts"] == 3


def test_a_real_child_looks_up_the_entry_the_supervisor_resolved(
    model_cache: Path, make_job: Callable[..., str]
) -> None:
    """No max_prompts in the spec, on CPU: job 1's child stores the base evaluation under the
    CPU-sized key, job 2's supervisor hands that entry over and job 2's child uses it."""
    from sap_core.modeling import save_tiny_llama

    save_tiny_llama(model_cache / MODEL, seed=uuid.uuid4().int % 10_000 + 1)
    (key,) = keys_for(model_cache, None, {**OPTIONS, "max_prompts": CPU_MAX_PROMPTS})
    job_spec = {
        "hyperparameters": {"max_steps": 1, "batch_size": 1, "max_seq_len": 64},
        "evaluation": OPTIONS,
    }
    first = make_job(spec=job_spec)
    run(first)
    assert load(first).status == "succeeded"
    entry = cached(key)
    assert entry is not None
    assert len([r for r in entry["results"] if r["harmful"]]) == CPU_MAX_PROMPTS
    with session_scope() as session:
        session.execute(
            update(BaseEvalCache)
            .where(BaseEvalCache.cache_key == key, BaseEvalCache.tenant_id.is_(None))
            .values(result={**entry, "model_name": SENTINEL})
        )
    second = make_job(spec=job_spec)
    run(second)
    with session_scope() as session:
        report = session.scalar(select(SafetyReport.report).where(SafetyReport.job_id == second))
    assert report is not None and report["models"]["base"] == SENTINEL
