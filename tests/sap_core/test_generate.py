"""Batched greedy generation: left padding gives the same answers as one-by-one, PeftModel works."""

from __future__ import annotations

import pytest

from sap_core.config import LoraSpec
from sap_core.generate import generate
from sap_core.modeling import attach_lora

PROMPTS = ["Hi", "Tell me a much longer story about the sea, please.", "2+2?"]


def test_batched_equals_single_and_returns_new_text_only(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny
    batched = generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=3)
    single = [generate(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in PROMPTS]
    assert batched == single
    assert len(batched) == 3
    assert all("<|im_start|>" not in out and "Tell me" not in out for out in batched)
    assert tok.padding_side == "right"  # restored
    assert not model.training


def test_works_on_peft_model_and_restores_train_mode(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny
    plain = generate(model, tok, PROMPTS[:2], max_new_tokens=5)
    peft_model = attach_lora(model, LoraSpec(r=4, alpha=8, dropout=0.0))
    peft_model.train()
    # A fresh LoRA has B = 0, so the outputs must equal the base model's.
    assert generate(peft_model, tok, PROMPTS[:2], max_new_tokens=5) == plain
    assert peft_model.training


def test_rejects_bad_arguments(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny
    with pytest.raises(ValueError):
        generate(model, tok, ["x"], max_new_tokens=0)
