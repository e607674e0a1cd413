"""The real model through the real worker: SmolLM2-135M-Instruct, 2 SAP steps, a tiny safety eval."""

from __future__ import annotations

import pytest

from tests.integration.conftest import wait_for
from tests.integration.test_training_jobs import TERMINAL, job, small_dataset, submit

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_smollm2_trains_two_sap_steps_through_the_worker(client, auth_headers, start_worker) -> None:
    worker = start_worker()
    spec = {
        "base_model": "smollm2-135m-instruct",
        "guard": "sap",
        "hyperparameters": {"max_steps": 2, "batch_size": 2, "max_seq_len": 128},
        "sap": {"refresh_every": 2},
        "evaluation": {"max_prompts": 2, "max_new_tokens": 8},
    }
    job_id = submit(client, auth_headers, spec, dataset=small_dataset(8))
    # First run converts the GGUF into the model cache (~30 s); each SAP step is ~10 s on 2 cores.
    final = wait_for(
        lambda: job(client, auth_headers, job_id), lambda j: j["status"] in TERMINAL, 600, "SmolLM2 job"
    )
    assert final["status"] == "succeeded", (final["error"], worker.log())
    assert final["step"] == 2
    report = client.get(f"/jobs/{job_id}/safety-report", headers=auth_headers).json()["report"]
    assert report["training"]["guard"] == "sap"
    assert report["models"]["base"] == "smollm2-135m-instruct"
    # Real text from a real model: the examples carry non-empty generations.
    assert any(example["tuned_response"].strip() for example in report["examples"])
