"""Generation speed of the safety evaluation on SmolLM2: HF `model.generate` vs sap_core.generate.

Usage:
    .venv/bin/python bench/eval_speed.py [--cache ~/.cache/safetune/models] [--model smollm2-135m-safe]
        [--prompts 64] [--max-new-tokens 48] [--batch-sizes 8,64] [--threads 2] [--repeats 2]

The same prompts (half from the held-out harmful set, half from the benign set, in file order) go
through three paths, greedy, in batches of each of `--batch-sizes`:

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
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument(
        "--batch-sizes", default="8,64", help="comma list: 8 was the evaluation's batch before, 64 is now"
    )
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the fastest counts")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
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
    batches = [int(b) for b in args.batch_sizes.split(",")]
    load_before = os.getloadavg()[0]

    def paths(batch: int) -> dict[str, Any]:
        return {
            "hf_generate": lambda: _hf_generate(model, tokenizer, prompts, args.max_new_tokens, batch),
            "ours": lambda: generate(
                model, tokenizer, prompts, args.max_new_tokens, batch, progress=print_progress("ours")
            ),
            "ours+stop": lambda: generate(
                model,
                tokenizer,
                prompts,
                args.max_new_tokens,
                batch,
                stop_when=is_settled_refusal,
                progress=print_progress("ours+stop"),
            ),
        }

    # Rounds interleave the paths, and each path keeps its fastest round: on a shared machine a
    # burst of someone else's work slows whichever path it lands on, never speeds one up.
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for _ in range(args.repeats):
        for batch in batches:
            for name, run in paths(batch).items():
                row = {**_measure(f"{name} @{batch}", run, tokenizer, len(prompts)), "batch_size": batch}
                key = (name, batch)
                if key not in best or row["seconds"] < best[key]["seconds"]:
                    best[key] = {**row, "path": name}
    rows = list(best.values())
    load = max(load_before, os.getloadavg()[0])
    cores = os.cpu_count() or 1
    # The bench's own threads count in the load average; only what is left is someone else's work.
    others = max(0.0, load - args.threads)
    loaded = others > cores * 0.5
    context = {
        "model": args.model,
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "batch_sizes": batches,
        "threads": args.threads,
        "repeats": args.repeats,
        "load_average_1m": round(load, 2),
        "cpu_cores": cores,
        "torch": torch.__version__,
    }
    reference = best[("hf_generate", batches[0])]
    lines = [
        "# Evaluation generation speed (CPU)",
        "",
        f"{args.model}, {len(prompts)} prompts (half harmful, half benign), {args.max_new_tokens} new "
        f"tokens, torch {torch.__version__}, {args.threads} thread(s), fastest of {args.repeats} "
        "interleaved rounds. "
        + (
            f"**The machine was loaded** (1-minute load average {load:.2f} on {cores} cores with "
            f"{args.threads} of it this bench's): absolute numbers are low; the ratios are the point."
            if loaded
            else f"1-minute load average {load:.2f} on {cores} cores ({args.threads} of it this bench's)."
        ),
        "",
        f"| path | batch | wall s | generated tokens | tokens/s | prompts/s | vs hf_generate @{batches[0]} |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['path']} | {row['batch_size']} | {row['seconds']} | {row['generated_tokens']} | "
            f"{row['tokens_per_s']} | {row['prompts_per_s']} | "
            f"{reference['seconds'] / row['seconds']:.2f}x faster |"
        )
    lines += [
        "",
        "`ours+stop` generates fewer tokens (a settled refusal ends after a few words), so compare wall "
        "time: it is what a job's evaluation pays. Before issue 14 a job ran `hf_generate` in batches "
        f"of {batches[0]}; now it runs `ours+stop` in batches of {batches[-1]}.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"context": context, "rows": rows}, indent=1))
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
