"""Generate the answers that the labelled judge set is made of, caching every answer.

Usage: ``nice -n 10 .venv/bin/python bench/judge_set_generate.py --cache ~/.cache/safetune/models``

Reads ``sap_core/resources/judge_set/prompts.jsonl`` (our own prompts; see the README next to it)
plus training-side prompts from ``align_harmful`` / ``align_benign``, answers each with the models
its row names (greedy, 96 new tokens, :func:`sap_core.generate.generate`), and appends
``{"model", "prompt", "response"}`` lines to ``.cache/judge_set_answers.jsonl``. A (model, prompt)
pair already in the cache is never generated again, so the script can be stopped and resumed.
The answers are then read and labelled by hand into ``labels.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sap_core.generate import generate  # noqa: E402
from sap_core.judges import is_settled_refusal  # noqa: E402
from sap_core.modeling import load_base_model  # noqa: E402

JUDGE_DIR = ROOT / "sap_core" / "resources" / "judge_set"
SAFETY = ROOT / "sap_core" / "resources" / "safety"
CACHE = ROOT / ".cache" / "judge_set_answers.jsonl"
MAX_NEW_TOKENS = 96
# Training-side prompts answered by each model: (file, first rows, models).
TRAINING_SIDE = (
    ("align_harmful.jsonl", 80, ("smollm2-135m-instruct",)),
    ("align_harmful.jsonl", 24, ("smollm2-135m-safe",)),
    ("align_benign.jsonl", 64, ("smollm2-135m-instruct",)),
)


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def wanted(written_only: bool = False) -> dict[str, list[str]]:
    """Model name -> prompts to answer, in a stable order (written prompts first)."""
    out: dict[str, list[str]] = {}
    for row in _jsonl(JUDGE_DIR / "prompts.jsonl"):
        for model in row["models"]:
            out.setdefault(model, []).append(row["prompt"])
    for file, n, models in () if written_only else TRAINING_SIDE:
        prompts = [r["prompt"] for r in _jsonl(SAFETY / file)[:n]]
        for model in models:
            out.setdefault(model, []).extend(prompts)
    return {m: list(dict.fromkeys(ps)) for m, ps in out.items()}


def main() -> None:
    """Answer every wanted (model, prompt) pair not yet cached."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "safetune" / "models")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--only", default=None, help="generate for this model only")
    parser.add_argument("--written-only", action="store_true", help="skip the training-side align_* prompts")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    done = {(r["model"], r["prompt"]) for r in _jsonl(CACHE)}
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    for model_name, prompts in wanted(args.written_only).items():
        if args.only and model_name != args.only:
            continue
        todo = [p for p in prompts if (model_name, p) not in done]
        if not todo:
            continue
        model, tok = load_base_model(args.cache / model_name, device="cpu")
        # One batch at a time, appended as it finishes, so an interrupted run keeps its answers.
        step = args.batch
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            # A settled refusal is cut short exactly as the safety eval cuts it (same judge verdicts).
            answers = generate(
                model,
                tok,
                chunk,
                max_new_tokens=MAX_NEW_TOKENS,
                batch_size=args.batch,
                stop_when=is_settled_refusal,
            )
            with CACHE.open("a", encoding="utf-8") as fh:
                for p, a in zip(chunk, answers, strict=True):
                    fh.write(json.dumps({"model": model_name, "prompt": p, "response": a}) + "\n")
            print(f"{model_name}: {start + len(chunk)}/{len(todo)}", flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
