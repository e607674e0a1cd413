"""Refusal alignment: data composition, config checks, and an atomic end-to-end build on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sap_core.alignment import (
    BASE_NAME,
    METADATA_FILE,
    SAFE_NAME,
    AlignConfig,
    alignment_data,
    build_safe_model,
)
from sap_core.judges import is_refusal
from sap_core.modeling import save_tiny_llama


def test_alignment_data_mixes_refusals_and_self_distilled_answers(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny
    convs = alignment_data(model, tok, AlignConfig(n_harmful=40))
    answers = [c[1]["content"] for c in convs]
    refusals = [a for a in answers if is_refusal(a)]
    assert len(refusals) == 40
    assert len(set(refusals)) > 5  # varied, not one memorised sentence
    assert len(answers) - len(refusals) >= 50  # benign self-distilled answers dominate the rest


def test_build_safe_model_end_to_end_on_tiny(tmp_path: Path) -> None:
    save_tiny_llama(tmp_path / BASE_NAME, seed=0)
    cfg = AlignConfig(max_steps=1, batch_size=4, max_seq_len=64, lora_r=2, n_harmful=8, eval_harmful=2,
                      eval_benign=2, eval_max_new_tokens=3)  # fmt: skip
    out = build_safe_model(tmp_path, cfg, log=lambda *_: None)
    assert out == tmp_path / SAFE_NAME
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["steps_done"] == 1 and meta["held_out_refusal"]["harmful"]["n"] == 2
    assert (out / "model.safetensors").exists() and not any(
        p.name.startswith(".") for p in tmp_path.iterdir()
    )
    # Merged: a plain model folder, no adapter files.
    assert not (out / "adapter_config.json").exists()
    build_safe_model(tmp_path, cfg, log=lambda *_: None)  # rebuild replaces atomically
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([BASE_NAME, SAFE_NAME])


def test_align_config_validation() -> None:
    with pytest.raises(ValueError, match="max_steps"):
        AlignConfig(max_steps=0)
    with pytest.raises(ValueError, match="eval_benign"):
        AlignConfig(eval_benign=-1)
