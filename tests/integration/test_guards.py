"""Every guard through the real worker: the job succeeds and its report names the guard and settings.

The anchor guard anchors to the base's own refusals, so it needs a safety-aligned base: these jobs
use smollm2-135m-safe (built from the shipped refusal LoRA) with small anchor sets and caps.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import wait_for
from tests.integration.test_training_jobs import TERMINAL, job, small_dataset, submit

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def safe_spec(guard: Any, **extra: Any) -> dict[str, Any]:
    return {
        "base_model": "smollm2-135m-safe",
        "guard": guard,
        "hyperparameters": {"max_steps": 2, "batch_size": 2, "max_seq_len": 160, "learning_rate": 5e-4},
        "validation_split": 0.25,
        "anchor": {"n_harmful": 6, "n_benign": 2, "max_new_tokens": 12, "batch_size": 2, "weight": 0.5},
        "constrained": {"early_beta": 1.5},
        "evaluation": {"max_prompts": 3, "max_new_tokens": 8},
        **extra,
    }


def test_each_guard_trains_through_the_worker_and_is_recorded_in_the_report(
    client, auth_headers, start_worker
) -> None:
    worker = start_worker()
    submitted = {
        "anchor": submit(client, auth_headers, safe_spec("anchor"), small_dataset(8)),
        "constrained": submit(client, auth_headers, safe_spec("constrained"), small_dataset(8)),
        # The list form composes too; the job records the canonical "+" name.
        "anchor+constrained": submit(
            client,
            auth_headers,
            safe_spec(
                ["anchor", "constrained"],
                selection={"enabled": True, "scales": [1.0, 0.8], "snapshots": 2, "max_prompts": 4},
            ),
            small_dataset(8),
        ),
    }
    for name, job_id in submitted.items():
        final = wait_for(
            lambda j=job_id: job(client, auth_headers, j),
            lambda j: j["status"] in TERMINAL,
            600,
            f"{name} job",
        )
        assert final["status"] == "succeeded", (name, final["error"], worker.log()[-3000:])
        assert final["guard"] == name
        report = client.get(f"/jobs/{job_id}/safety-report", headers=auth_headers).json()["report"]
        guard = report["guard"]
        assert guard["name"] == name and guard["parts"] == name.split("+")
        if "anchor" in guard["parts"]:
            assert (
                guard["settings"]["anchor"]["n_harmful"] == 6 and guard["settings"]["anchor"]["weight"] == 0.5
            )
            observed = guard["observed"]["anchor"]
            assert observed["anchored_steps"] == 2 and 1 <= observed["anchor_harmful"] <= 6
        if "constrained" in guard["parts"]:
            assert guard["settings"]["constrained"]["early_beta"] == 1.5
        assert report["training"]["guard"] == name
    selection = client.get(
        f"/jobs/{submitted['anchor+constrained']}/safety-report", headers=auth_headers
    ).json()["report"]["selection"]
    # A snapshot at step 1 plus the final adapter, each at scales 1.0 and 0.8; the pick is within budget.
    assert len(selection["candidates"]) == 4
    assert selection["picked"]["within_budget"] is True
    assert selection["picked"]["val_loss"] <= selection["reference_val_loss"] * (1 + selection["budget"])
