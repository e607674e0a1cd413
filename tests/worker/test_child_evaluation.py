"""The training child's safety evaluation records which engine produced the answers, keys the base
cache by that engine, and falls back to transformers (saying why) where vLLM cannot run: on this
CPU-only machine, always. Runs in-process on the tiny model built into a temporary model cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from sap_core.config import LoraSpec, TrainConfig
from sap_core.modeling import attach_lora, load_base_model
from worker.base_eval_keys import base_eval_needs
from worker.child_evaluation import run_safety_evaluation
from worker.child_protocol import ChildRequest
from worker.model_store import ensure_model

MODEL = "tiny-random-llama"
OPTIONS = {"max_prompts": 1, "max_new_tokens": 2}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    ensure_model(MODEL, folder)
    return folder


def evaluate(
    cache: Path, *, eval_engine: str, base_eval_cache: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    model, tok = load_base_model(cache / MODEL, "cpu")
    torch.manual_seed(0)
    peft_model = attach_lora(model, LoraSpec(r=4))
    events: list[dict[str, Any]] = []
    request = ChildRequest(
        job_id="job-1",
        base_model=MODEL,
        model_cache=str(cache),
        device="cpu",
        evaluation=OPTIONS,
        spec={},
        guard="none",
        train_path="/unused",
        val_path=None,
        eval_prompts_path=None,
        resume_from=None,
        checkpoint_dir="/unused",
        output_dir="/unused",
        base_eval_cache=base_eval_cache or {},
        eval_engine=eval_engine,  # type: ignore[arg-type]  # a test parameter, one of the Literal's
    )
    report = run_safety_evaluation(
        peft_model,
        tok,
        request=request,
        config=TrainConfig(guard="none"),
        options=OPTIONS,
        utility={"val_loss_before": 1.0, "val_loss_after": 1.0},
        screening=None,
        emit=lambda event: events.append({"kind": event.kind, **dataclasses.asdict(event)}),
        base_dir=cache / MODEL,
        adapter_dir=cache / "no-adapter-needed",
    )
    return report, events


def test_the_report_names_the_engine_and_why_vllm_was_not_used(cache: Path) -> None:
    report, events = evaluate(cache, eval_engine="vllm")
    assert report["generation"]["engine"] == "transformers"
    assert "CUDA" in report["generation"]["engine_fallback_reason"]
    (stored,) = [e for e in events if e["kind"] == "base_eval"]
    assert stored["result"]["generation"]["engine"] == "transformers"
    # The emitted entry is keyed under the engine that produced it, never under another's.
    (transformers_key,) = [n.key for n in base_eval_needs(MODEL, cache, OPTIONS, None, engine="transformers")]
    (vllm_key,) = [n.key for n in base_eval_needs(MODEL, cache, OPTIONS, None, engine="vllm")]
    assert stored["key"] == transformers_key != vllm_key

    # auto on a CPU worker is the expected case, not a fault: no reason is recorded.
    auto, _ = evaluate(cache, eval_engine="auto")
    assert auto["generation"]["engine"] == "transformers"
    assert "engine_fallback_reason" not in auto["generation"]


def test_a_base_entry_made_by_another_engine_is_not_reused(cache: Path) -> None:
    first, events = evaluate(cache, eval_engine="transformers")
    (stored,) = [e for e in events if e["kind"] == "base_eval"]
    (vllm_key,) = [n.key for n in base_eval_needs(MODEL, cache, OPTIONS, None, engine="vllm")]
    assert vllm_key is not None
    # Only a vLLM-made entry is on offer: the transformers evaluation generates its own base answers.
    _, again = evaluate(cache, eval_engine="transformers", base_eval_cache={vllm_key: stored["result"]})
    assert [e["key"] for e in again if e["kind"] == "base_eval"] == [stored["key"]]
    # Its own engine's entry is used as is: nothing is regenerated or stored again.
    reused, none_stored = evaluate(
        cache, eval_engine="transformers", base_eval_cache={stored["key"]: stored["result"]}
    )
    assert not [e for e in none_stored if e["kind"] == "base_eval"]
    assert reused["metrics"] == first["metrics"]


def test_the_stage_reports_every_answer_it_generates_and_only_those(cache: Path) -> None:
    (shipped,) = base_eval_needs(MODEL, cache, OPTIONS, None, engine="transformers")
    prompts = sum(len(ps.subset(OPTIONS["max_prompts"]).prompts) for ps in shipped.prompt_sets)
    _, events = evaluate(cache, eval_engine="transformers")
    progress = [e for e in events if e["kind"] == "stage_progress"]
    assert progress[0]["done"] == 0 and progress[0]["eta_s"] is None  # the size, before any answer
    assert {p["total"] for p in progress} == {2 * prompts}  # the base and the tuned model
    assert [p["done"] for p in progress] == sorted(p["done"] for p in progress)
    assert progress[-1]["done"] == 2 * prompts and progress[-1]["eta_s"] == 0.0
    (stored,) = [e for e in events if e["kind"] == "base_eval"]
    # With the base answers cached, the stage only generates the tuned model's.
    _, cached = evaluate(cache, eval_engine="transformers", base_eval_cache={stored["key"]: stored["result"]})
    assert {e["total"] for e in cached if e["kind"] == "stage_progress"} == {prompts}
