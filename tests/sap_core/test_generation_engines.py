"""Engine selection and fallback (no GPU here, vllm importable only where a test puts a package named
so on sys.path), and the transformers engine answering base and base+adapter requests in one list."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sap_core.config import LoraSpec
from sap_core.generate import generate
from sap_core.generation_engines import (
    TRANSFORMERS,
    VLLM,
    EngineChoice,
    GenerationRequest,
    GenerationSettings,
    TransformersEngine,
    candidate_engines,
    select_engine,
)
from sap_core.modeling import attach_lora


@pytest.fixture
def vllm_importable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package named `vllm` on sys.path: what `find_spec` sees on a worker that has vLLM installed."""
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_without_vllm_every_preference_generates_with_transformers() -> None:
    assert select_engine("cpu") == EngineChoice(TRANSFORMERS)
    assert select_engine("cuda:0", "auto") == EngineChoice(TRANSFORMERS)  # vllm is not installed here
    assert select_engine("cuda", "transformers") == EngineChoice(TRANSFORMERS)
    asked = select_engine("cuda", "vllm")
    assert asked.name == TRANSFORMERS and "not installed" in (asked.fallback_reason or "")
    assert candidate_engines("auto") == (TRANSFORMERS,)


@pytest.mark.usefixtures("vllm_importable")
def test_vllm_is_chosen_only_on_cuda_and_only_when_not_refused() -> None:
    assert select_engine("cuda:1") == EngineChoice(VLLM)
    assert select_engine("cuda", "vllm") == EngineChoice(VLLM)
    assert select_engine("cuda", "transformers") == EngineChoice(TRANSFORMERS)
    on_cpu = select_engine("cpu", "vllm")
    assert on_cpu.name == TRANSFORMERS and "CUDA" in (on_cpu.fallback_reason or "")
    assert select_engine("cpu", "auto") == EngineChoice(TRANSFORMERS)  # auto: not a fault, no reason
    # The supervisor cannot see the child's device: both engines' cache entries may be needed.
    assert candidate_engines("auto") == (TRANSFORMERS, VLLM)
    assert candidate_engines("transformers") == (TRANSFORMERS,)


def test_an_unknown_preference_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="eval_engine='tensorrt'"):
        select_engine("cuda", "tensorrt")
    with pytest.raises(ValueError, match="eval_engine"):
        candidate_engines("fast")


def test_transformers_engine_answers_base_and_adapter_requests_in_their_order(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny
    torch.manual_seed(0)
    peft_model = attach_lora(model, LoraSpec(r=4))
    with torch.no_grad():  # a non-zero adapter, so base and base+adapter answers can differ
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    prompts = ["How are you?", "Name a colour.", "What is 2+2?"]
    requests = [GenerationRequest(p, adapter=i % 2 == 1) for i, p in enumerate(prompts * 2)]
    settings = GenerationSettings(max_new_tokens=6, batch_size=2, system=None, stop_when=None)
    counts: list[tuple[int, int]] = []
    answers = TransformersEngine(peft_model, tok).answer(
        requests, settings, progress=lambda done, total: counts.append((done, total))
    )
    # The base pass (3 requests, batches of 2), then the adapter pass, counted as one run of 6.
    assert counts == [(2, 6), (3, 6), (5, 6), (6, 6)]

    tuned = generate(peft_model, tok, prompts, 6, 2)
    with peft_model.disable_adapter():
        base = generate(peft_model, tok, prompts, 6, 2)
    expected = [(tuned if r.adapter else base)[i % 3] for i, r in enumerate(requests)]
    assert answers == expected
    assert base != tuned  # the flag reached the model
