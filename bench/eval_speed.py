"""Generation speed of the safety evaluation on SmolLM2: HF `model.generate` vs sap_core.generate.

Usage:
    .venv/bin/python bench/eval_speed.py [--cache ~/.cache/safetune/models] [--model smollm2-135m-safe]
        [--prompts 16] [--max-new-tokens 32] [--batch-size 8] [--threads 1] [--repeats 2]

The same prompts (half from the held-out harmful set, half from the benign set, in file order) go
through three paths, greedy, in batches of `--batch-size`:

- `hf_generate`: what the evaluation did before (transformers' `model.generate`, left padding,
  prompts in the given order);
- `ours`: sap_core.generate (prompts sorted by length, our own KV-cached loop, rows leave the batch
  at EOS);
- `ours+stop`: the same with `stop_settled_refusals` (what a job runs): a settled refusal ends early.

Generated tokens are counted by re-tokenising each answer, the same way for every path. The result
table (bench/results/eval_speed.md) records the threads, the machine's load average while it ran and
the torch version, so a number measured on a loaded machine says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def _prompts(n: int) -> list[str]:
    from sap_core.prompt_sets import default_prompt_sets

    harmful, benign = default_prompt_sets()
    half = n // 2
    return [p.prompt for p in harmful.prompts[:half]] + [p.prompt for p in benign.prompts[: n - half]]


def _hf_generate(model: Any, tokenizer: Any, prompts: list[str], max_new: int, batch: int) -> list[str]:
    import torch

    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    out: list[str] = []
    for start in range(0, len(prompts), batch):
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts[start : start + batch]
        ]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            ids = model.generate(
                **enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        out.extend(tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    return [o.strip() for o in out]


def _measure(name: str, run: Any, tokenizer: Any, n_prompts: int) -> dict[str, Any]:
    from sap_core.progress import format_seconds

    start = time.perf_counter()
    answers = run()
    seconds = time.perf_counter() - start
    tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    row = {
        "path": name,
        "seconds": round(seconds, 2),
        "generated_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
        "prompts_per_s": round(n_prompts / seconds, 2),
    }
    print(
        f"{name:12s} {format_seconds(seconds)}  {tokens} tokens  {row['tokens_per_s']} tok/s", file=sys.stderr
    )  # noqa: T201
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "safetune" / "models")
    parser.add_argument("--model", default="smollm2-135m-safe")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the fastest counts")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    parser.add_argument("--out", type=Path, default=RESULTS / "eval_speed.md")
    args = parser.parse_args(argv)

    import torch

    from sap_core.generate import generate
    from sap_core.judges import is_settled_refusal
    from sap_core.modeling import load_base_model
    from sap_core.progress import print_progress

    torch.set_num_threads(args.threads)
    model, tokenizer = load_base_model(args.cache / args.model, "cpu")
    prompts = _prompts(args.prompts)
    load_before = os.getloadavg()[0]
    paths: dict[str, Any] = {
        "hf_generate": lambda: _hf_generate(model, tokenizer, prompts, args.max_new_tokens, args.batch_size),
        "ours": lambda: generate(
            model, tokenizer, prompts, args.max_new_tokens, args.batch_size, progress=print_progress("ours")
        ),
        "ours+stop": lambda: generate(
            model,
            tokenizer,
            prompts,
            args.max_new_tokens,
            args.batch_size,
            stop_when=is_settled_refusal,
            progress=print_progress("ours+stop"),
        ),
    }
    # Rounds interleave the paths, and each path keeps its fastest round: on a shared machine a
    # burst of someone else's work slows whichever path it lands on, never speeds one up.
    best: dict[str, dict[str, Any]] = {}
    for _ in range(args.repeats):
        for name, run in paths.items():
            row = _measure(name, run, tokenizer, len(prompts))
            if name not in best or row["seconds"] < best[name]["seconds"]:
                best[name] = row
    rows = [best[name] for name in paths]
    load = max(load_before, os.getloadavg()[0])
    cores = os.cpu_count() or 1
    loaded = load > cores * 0.5
    context = {
        "model": args.model,
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "repeats": args.repeats,
        "load_average_1m": round(load, 2),
        "cpu_cores": cores,
        "torch": torch.__version__,
    }
    base = rows[0]["tokens_per_s"]
    lines = [
        "# Evaluation generation speed (CPU)",
        "",
        f"{args.model}, {len(prompts)} prompts (half harmful, half benign), {args.max_new_tokens} new "
        f"tokens, batch {args.batch_size}, torch {torch.__version__}, {args.threads} thread(s), fastest of "
        f"{args.repeats} interleaved rounds. "
        + (
            f"**The machine was loaded** (1-minute load average {load:.2f} on {cores} cores, another "
            "benchmark running): absolute numbers are low; the ratios are the point."
            if loaded
            else f"Load average {load:.2f} on {cores} cores."
        ),
        "",
        "| path | wall s | generated tokens | tokens/s | prompts/s | vs hf_generate (tokens/s) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['path']} | {row['seconds']} | {row['generated_tokens']} | {row['tokens_per_s']} | "
            f"{row['prompts_per_s']} | {row['tokens_per_s'] / base:.2f}x |"
        )
    lines += [
        "",
        "`ours+stop` generates fewer tokens (a settled refusal ends after a few words), so compare its "
        "prompts/s: it is what a job's evaluation pays per prompt.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"context": context, "rows": rows}, indent=1))
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
