"""bench/train_step.py: its FLOP count, the ABBA order and paired ratios, and a one-step run on the
tiny model in which the plain PEFT loop and our loop train identically (so their times compare)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.train_step import flops_per_token, main, paired_ratios, peak_tflops, round_orders
from sap_core.config import LoraSpec
from sap_core.modeling import attach_lora, build_tiny_llama


def test_flops_count_every_linear_weight_twice_forward_twice_backward_and_trainables_once_more() -> None:
    model, _ = build_tiny_llama(0)
    peft_model = attach_lora(model, LoraSpec(r=4))
    fpt, n, n_t = flops_per_token(peft_model)
    linear = sum(m.weight.numel() for m in peft_model.modules() if isinstance(m, torch.nn.Linear))
    assert n == linear and n_t == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert fpt == 4 * n + 2 * n_t and 0 < n_t < n


def test_peak_lookup_and_abba_rounds() -> None:
    assert peak_tflops("NVIDIA H200") == 989.0 and peak_tflops("Some GPU") is None
    assert round_orders(["a", "b", "c"], 3) == [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]
    rounds = [{"none": 1.0, "sap": 1.2}, {"none": 2.0, "sap": 2.6}, {"none": 1.0, "sap": 1.1}]
    # Paired within each round: a slower machine in round 2 does not inflate sap's ratio.
    assert paired_ratios(rounds, "none") == {"sap": pytest.approx(1.2)}


def test_a_one_step_run_writes_both_files_and_our_loop_matches_plain_peft(tmp_path: Path) -> None:
    out = tmp_path / "train_step"
    args = ["--models", "tiny", "--guards", "none,ema,anchor:every=2", "--steps", "1", "--rounds", "1"]
    result = main([*args, "--batch", "2", "--seq", "160", "--device", "cpu", "--out", str(out)])
    tiny = result["models"]["tiny"]
    assert set(tiny["variants"]) == {"peft", "none", "ema", "anchor:every=2"}
    assert tiny["max_loss_diff_vs_plain_peft"] < 1e-5  # the same computation, so the same losses
    assert tiny["finetune_vs_plain_peft"] > 0 and tiny["x_plain_lora"]["ema"] > 0
    assert json.loads(out.with_suffix(".json").read_text()) == json.loads(json.dumps(result))
    assert "plain PEFT loop (reference)" in out.with_suffix(".md").read_text()
