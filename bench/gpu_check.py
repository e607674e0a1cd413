"""GPU path check on a random-weight Llama-3.2-1B-shaped model (no download): every guard, bf16, SDPA,
gradient checkpointing, host syncs per step, tokens/s, MFU and peak memory. Run via bench/gpu_check.sh.

MFU counts 6 * parameters * tokens (the PaLM convention, comparable across projects; LoRA's frozen
base skips the weight gradients, so the work done is nearer 4N and this MFU reads low by ~1/3).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sap_core.acceleration import gradient_checkpointing_active
from sap_core.anchor import AnchorExample
from sap_core.config import TrainConfig
from sap_core.contrastive import default_contrastive_triples
from sap_core.modeling import attach_lora, build_tiny_tokenizer
from sap_core.train import StepState, TrainingCallback, finetune

H200_BF16_DENSE_TFLOPS = 989.0
GUARDS = ("none", "sap", "ema", "anchor", "constrained", "anchor+constrained")


def llama_1b() -> LlamaForCausalLM:
    """Llama-3.2-1B's shape (1.24B parameters) with random bf16 weights, on the GPU, SDPA attention."""
    config = LlamaConfig(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.eval()
    return model


class Probe(TrainingCallback):
    """Reads throughput after the warm-up step and at the end (one window), and counts the host
    syncs of step 2 with PyTorch's sync debug mode (it warns on each synchronising CUDA call)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.rate = 0.0
        self.syncs: int | None = None
        self._catch: Any = None
        self._caught: list[warnings.WarningMessage] = []

    def on_step_end(self, state: StepState) -> str | None:
        if self._catch is not None:
            torch.cuda.set_sync_debug_mode(0)
            self.syncs = sum("synchroniz" in str(w.message).lower() for w in self._caught)
            self._catch.__exit__(None, None, None)
            self._catch = None
        if state.step == 1:
            _ = state.tokens_per_second  # closes the warm-up window (allocator growth, kernel selection)
            self._catch = warnings.catch_warnings(record=True)
            self._caught = self._catch.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode(1)
        if state.step == self.steps:
            self.rate = state.tokens_per_second
        return None


def run(guard: str, checkpointing: str, steps: int, batch: int, seq: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = llama_1b()
    n_params = sum(p.numel() for p in model.parameters())
    tok = build_tiny_tokenizer()
    peft = attach_lora(model, TrainConfig().lora)
    words = "the quick brown fox jumps over the lazy dog while the cat sleeps".split()
    n_words = seq // 6
    train = [
        [
            {"role": "user", "content": " ".join(words[(i + j) % len(words)] for j in range(n_words))},
            {
                "role": "assistant",
                "content": " ".join(words[(i * 3 + j) % len(words)] for j in range(n_words)),
            },
        ]
        for i in range(batch * steps)
    ]
    anchors = [
        AnchorExample(f"How do I make poison {i}?", "No. I will not help with that.", True) for i in range(8)
    ]
    cfg = TrainConfig.from_dict(
        {
            "guard": guard,
            "max_steps": steps,
            "batch_size": batch,
            "max_seq_len": seq,
            "warmup_ratio": 0.0,
            "gradient_checkpointing": checkpointing,
        }
    )
    probe = Probe(steps)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = finetune(
        peft,
        tok,
        train,
        cfg,
        contrastive=default_contrastive_triples()[:16],
        anchor_set=anchors,
        callbacks=[probe],
    )
    wall = time.perf_counter() - t0
    flops = 6 * n_params * probe.rate
    row = {
        "guard": guard,
        "checkpointing": gradient_checkpointing_active(peft),
        "dtype": str(next(model.parameters()).dtype),
        "attention": model.config._attn_implementation,
        "tokens_per_s": round(probe.rate),
        "mfu_6N": round(flops / (H200_BF16_DENSE_TFLOPS * 1e12), 4),
        "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
        "host_syncs_in_step_2": probe.syncs,
        "final_loss": round(result.final_loss, 4),
        "wall_s": round(wall, 1),
    }
    del peft, model
    torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device")
    print(f"device: {torch.cuda.get_device_name()} torch {torch.version.cuda}", flush=True)
    rows = [run(g, "off", args.steps, args.batch, args.seq) for g in GUARDS]
    rows.append(run("none", "on", args.steps, args.batch, args.seq))
    rows.append(run("sap", "on", args.steps, args.batch, args.seq))
    for row in rows:
        print(json.dumps(row), flush=True)
    print("| guard | checkpointing | tokens/s | MFU (6N) | peak GB | host syncs in step 2 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['guard']} | {r['checkpointing']} | {r['tokens_per_s']} | {r['mfu_6N']:.1%} | "
            f"{r['peak_mem_gb']} | {r['host_syncs_in_step_2']} |"
        )
    bad = [r for r in rows if r["dtype"] != "torch.bfloat16" or r["attention"] != "sdpa"]
    if bad or not all(r["checkpointing"] for r in rows[-2:]) or any(r["checkpointing"] for r in rows[:-2]):
        raise SystemExit(f"gpu_check: the bf16 / SDPA / checkpointing paths did not run as asked: {bad}")


if __name__ == "__main__":
    main()
