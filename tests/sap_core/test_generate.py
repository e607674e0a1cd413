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


def test_last_position_logits_give_the_same_answers(tiny, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sap_core import generate as generate_module

    model, tok = tiny
    assert generate_module._accepts_logits_to_keep(model)
    fast = generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=3)
    monkeypatch.setattr(generate_module, "_accepts_logits_to_keep", lambda _model: False)
    assert generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=3) == fast


def test_a_batch_out_of_memory_is_split_and_retried(tiny) -> None:  # type: ignore[no-untyped-def]
    import torch

    model, tok = tiny
    expected = generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=1)
    real_forward = model.forward
    seen_rows: list[int] = []

    def forward_with_small_memory(*args, **kwargs):  # type: ignore[no-untyped-def]
        rows = kwargs["input_ids"].shape[0]
        seen_rows.append(rows)
        if rows > 1:  # what an accelerator does when a batch's activations do not fit
            raise torch.OutOfMemoryError("out of memory")
        return real_forward(*args, **kwargs)

    model.forward = forward_with_small_memory
    progress: list[tuple[int, int]] = []
    try:
        got = generate(
            model, tok, PROMPTS, max_new_tokens=6, batch_size=4, progress=lambda d, t: progress.append((d, t))
        )
    finally:
        del model.forward
    assert got == expected
    assert seen_rows[0] == 3 and 2 in seen_rows  # tried the whole batch, then halves, then singles
    assert progress[-1] == (3, 3) and [d for d, _ in progress] == sorted(d for d, _ in progress)
