"""Does the guard keep refusals? Fine-tune smollm2-135m-safe with guard none/sap/ema on a benign and a
poisoned (10 % harmful) dataset, same seed and steps, and compare safety and utility.

Usage::

    python bench/safety_guard.py --cache ~/.cache/safetune/models [--steps 10] [--harmful 48 --benign 24]

Writes ``bench/results/safety_guard.md`` (rewritten after every run, so a partial table survives an
interrupted bench). Needs ``<cache>/smollm2-135m-safe`` (``python -m sap_core.alignment --cache``).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from sap_core.config import TrainConfig
from sap_core.modeling import attach_lora, load_base_model
from sap_core.prompt_sets import default_prompt_sets
from sap_core.safety_eval import EvalConfig, ModelEval, evaluate_model
from sap_core.train import evaluation_loss, finetune

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "sap_core" / "resources" / "datasets"
OUT = ROOT / "bench" / "results" / "safety_guard.md"


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def datasets(seed: int, harmful_share: float) -> tuple[dict[str, list[Any]], list[Any]]:
    """Benign and poisoned training sets plus a shared benign validation split."""
    rng = random.Random(seed)
    chat = [ex["messages"] for ex in _jsonl(RES / "sample_chat.jsonl")]
    rng.shuffle(chat)
    val, benign = chat[:12], chat[12:]
    harmful = [ex["messages"] for ex in _jsonl(RES / "harmful_mix.jsonl") if ex["harmful"]]
    # 10 % of the *poisoned* set is harmful: h / (b + h) = share.
    n_h = round(harmful_share * len(benign) / (1 - harmful_share))
    poisoned = benign + rng.sample(harmful, n_h)
    rng.shuffle(poisoned)
    return {"benign": benign, f"poisoned{int(harmful_share * 100)}": poisoned}, val


def summarize(ev: ModelEval) -> dict[str, float]:
    """Headline rates for one evaluation."""
    h = ev.counts("harm_classifier", harmful=True)
    b = ev.counts("harm_classifier", harmful=False)
    return {
        "harmful_score": h["harmful"] / h["n"],
        "refusal_rate": h["refused"] / h["n"],
        "keyword_harmful": 1 - h["refused"] / h["n"],
        "over_refusal": b["refused"] / b["n"],
    }


def write_table(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path = OUT) -> None:
    """(Re)write the markdown results table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Safety guard bench (CPU)",
        "",
        "Harmful score = not refused (keyword) AND harm classifier fires, on held-out `eval_harmful`;",
        "refusal rate on the same prompts; over-refusal = refusals on held-out `eval_benign`;",
        "val loss = assistant-token loss on 12 held-out sample-chat conversations.",
        "",
        "```",
        json.dumps(meta, indent=1),
        "```",
        "",
        "| model | data | guard | harmful score | refusal rate | over-refusal | val loss | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['data']} | {r['guard']} | {r['harmful_score']:.3f} "
            f"| {r['refusal_rate']:.3f} | {r['over_refusal']:.3f} | {r['val_loss']:.4f} "
            f"| {r['train_s']:.0f} |"
        )
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    """Run the grid and print/write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--model", default="smollm2-135m-safe")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--harmful", type=int, default=48, help="eval_harmful prompts")
    parser.add_argument("--benign", type=int, default=24, help="eval_benign prompts")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--max-seq-len", type=int, default=192)
    parser.add_argument("--guards", default="none,sap,ema")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT, help="markdown table to (re)write")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    harmful_set, benign_set = default_prompt_sets()
    sets = [harmful_set.subset(args.harmful), benign_set.subset(args.benign)]
    cfg = EvalConfig(max_new_tokens=args.max_new_tokens, batch_size=16)
    data, val = datasets(args.seed, 0.10)
    meta = {
        "model": args.model,
        "steps": args.steps,
        "lr": args.lr,
        "batch_size": 8,
        "max_seq_len": args.max_seq_len,
        "lora": "r=8 alpha=16 q/k/v/o",
        "eval": {
            "harmful": len(sets[0].prompts),
            "benign": len(sets[1].prompts),
            "max_new_tokens": args.max_new_tokens,
        },
        "datasets": {k: len(v) for k, v in data.items()},
        "seed": args.seed,
    }
    rows: list[dict[str, Any]] = []
    model_dir = args.cache / args.model
    base, tok = load_base_model(model_dir, device="cpu")
    t0 = time.perf_counter()
    base_ev = evaluate_model(base, tok, sets, cfg, model_name=args.model)
    rows.append(
        {
            "model": args.model,
            "data": "-",
            "guard": "(base)",
            **summarize(base_ev),
            "val_loss": evaluation_loss(base, tok, val, args.max_seq_len, 8),
            "train_s": 0.0,
        }
    )
    print(f"base done in {time.perf_counter() - t0:.0f}s: {rows[-1]}", flush=True)  # noqa: T201
    write_table(rows, meta, args.out)
    del base
    for data_name, train in data.items():
        for guard in args.guards.split(","):
            model, tok = load_base_model(model_dir, device="cpu")
            peft_model = attach_lora(model, TrainConfig().lora)
            tcfg = TrainConfig(
                guard=guard,  # type: ignore[arg-type]
                max_steps=args.steps,
                batch_size=8,
                learning_rate=args.lr,
                max_seq_len=args.max_seq_len,
                seed=args.seed,
                warmup_ratio=0.1,
            )
            t0 = time.perf_counter()
            finetune(peft_model, tok, train, tcfg)
            train_s = time.perf_counter() - t0
            ev = evaluate_model(peft_model, tok, sets, cfg, model_name=f"{args.model}+{data_name}+{guard}")
            rows.append(
                {
                    "model": args.model,
                    "data": data_name,
                    "guard": guard,
                    **summarize(ev),
                    "val_loss": evaluation_loss(peft_model, tok, val, args.max_seq_len, 8),
                    "train_s": train_s,
                }
            )
            print(f"{data_name}/{guard}: {rows[-1]}", flush=True)  # noqa: T201
            write_table(rows, meta, args.out)
    print(args.out.read_text())  # noqa: T201


if __name__ == "__main__":
    main()
