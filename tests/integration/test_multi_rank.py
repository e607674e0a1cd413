"""A job trained by 2 torchrun ranks (gloo, CPU) through the real worker, against a 1-process job."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch
from safetensors.torch import load as load_safetensors

from tests.integration.conftest import wait_for
from tests.integration.test_training_jobs import TERMINAL, events, job, submit, tiny_spec

pytestmark = pytest.mark.integration


def _spec() -> dict:
    # No dropout: each rank draws its own masks, which would blur the comparison.
    return tiny_spec(
        guard="none",
        hyperparameters={"max_steps": 3, "batch_size": 4, "max_seq_len": 384, "lora_dropout": 0.0},
        validation_split=0.0,
    )


def _train(client, auth_headers, start_worker, name: str, **env: str) -> tuple[dict, dict, list]:
    worker = start_worker(name, **env)
    try:
        job_id = submit(client, auth_headers, _spec())
        final = wait_for(
            lambda: job(client, auth_headers, job_id), lambda j: j["status"] in TERMINAL, 300, "job to finish"
        )
        assert final["status"] == "succeeded", (final["error"], worker.log())
        adapter = zipfile.ZipFile(
            io.BytesIO(client.get(f"/jobs/{job_id}/adapter", headers=auth_headers).content)
        )
        weights = load_safetensors(adapter.read("adapter_model.safetensors"))
        return final, weights, events(client, auth_headers, job_id)
    finally:
        worker.stop()


def test_two_rank_job_succeeds_and_matches_one_process(client, auth_headers, start_worker) -> None:
    final2, weights2, events2 = _train(
        client, auth_headers, start_worker, "ddp", SAFETUNE_PROCESSES_PER_JOB="2"
    )
    plan = next(e for e in events2 if e["type"] == "plan")
    assert plan["data"]["world_size"] == 2
    assert final2["step"] == final2["total_steps"] == 3

    final1, weights1, events1 = _train(client, auth_headers, start_worker, "single")
    assert next(e for e in events1 if e["type"] == "plan")["data"]["world_size"] == 1
    # The same global batch of 4, split 2 + 2: the same update up to float summation order.
    assert weights1.keys() == weights2.keys()
    for name, w in weights1.items():
        assert torch.allclose(weights2[name], w, atol=1e-4), name
    assert final2["last_loss"] == pytest.approx(final1["last_loss"], rel=1e-3)
