"""Assemble ``sap_core/resources/judge_set/labels.jsonl`` from hand labels and synthetic gibberish.

Usage: ``.venv/bin/python bench/judge_set_build.py --hand HAND_LABELS.jsonl``

``--hand`` holds the generated answers (``bench/judge_set_generate.py``) after a person read and
labelled each one (``{"model", "prompt", "response", "label", "kind"}``). This script adds the
split (:func:`sap_core.judge_set.split_of`) and degenerate answers built deterministically from
the labelled answers of the same split, so a test-split gibberish item never reuses training text:

* ``word_salad``: the words of a harmful or harmless answer shuffled (alarming words, no meaning);
* ``loop``: one short phrase of an answer repeated until the 96-token budget runs out;
* ``token_soup``: random tokens of the SmolLM2 tokenizer's vocabulary, decoded.

All three are labelled ``incoherent`` by construction.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sap_core.judge_set import DEGENERATE_KINDS, LABELS, LABELS_PATH, degenerate, split_of  # noqa: E402

SEED = 0
PER_SPLIT_AND_KIND = {"train": 30, "test": 25}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def token_soup(vocab: list[int], tokenizer: object, rng: random.Random) -> str:
    """Random vocabulary tokens, decoded: what a collapsed model emits."""
    ids = [rng.choice(vocab) for _ in range(rng.randint(20, 90))]
    return str(tokenizer.decode(ids, skip_special_tokens=True)).strip()  # type: ignore[attr-defined]


def synthetic(rows: list[dict], split: str, tokenizer: object, rng: random.Random) -> list[dict]:
    """Degenerate answers for one split, made from that split's labelled answers."""
    sources = [r for r in rows if r["split"] == split and r["label"] in ("harmful", "harmless")]
    sources = [r for r in sources if len(r["response"].split()) >= 12]
    vocab = list(range(tokenizer.vocab_size))  # type: ignore[attr-defined]
    out = []
    n = PER_SPLIT_AND_KIND[split]
    for kind in (*DEGENERATE_KINDS, "token_soup"):
        for _ in range(n):
            src = rng.choice(sources)
            if kind == "token_soup":
                text = token_soup(vocab, tokenizer, rng)
            else:
                text = degenerate(src["response"], kind, rng)
            out.append(
                {
                    "prompt": src["prompt"],
                    "response": text,
                    "label": "incoherent",
                    "kind": src["kind"],
                    "source": f"synthetic:{kind}",
                    "split": split,
                }
            )
    return out


def main() -> None:
    """Write labels.jsonl: hand-labelled rows first, then the synthetic gibberish."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hand", type=Path, required=True)
    parser.add_argument(
        "--tokenizer", type=Path, default=Path.home() / ".cache/safetune/models/smollm2-135m-instruct"
    )
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(args.tokenizer), local_files_only=True)
    rows = []
    for r in _jsonl(args.hand):
        if r["label"] not in LABELS:
            raise ValueError(f"bad label {r['label']!r} for {r['prompt'][:60]!r}")
        rows.append(
            {
                "prompt": r["prompt"],
                "response": r["response"],
                "label": r["label"],
                "kind": r["kind"],
                "source": r["model"],
                "split": split_of(r["prompt"], r["kind"]),
            }
        )
    rng = random.Random(SEED)
    rows += synthetic(rows, "train", tokenizer, rng) + synthetic(rows, "test", tokenizer, rng)
    LABELS_PATH.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} rows to {LABELS_PATH.relative_to(ROOT)}")  # noqa: T201


if __name__ == "__main__":
    main()
