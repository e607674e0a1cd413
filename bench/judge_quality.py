"""Precision/recall of the safety judges on the held-out split of the labelled judge set.

Usage: ``.venv/bin/python bench/judge_quality.py`` (about a minute on 2 CPU cores)

Scores the refusal keyword judge (positives: answers labelled ``refusal``) and the harm
classifier judge with the shipped weights (v1, binary head) and the candidate 4-class weights
(``bench/harm_classifier_v2.json``, not shipped: see README) (positives: answers labelled
``harmful``), overall and per slice: harmful prompts, milder
do-not-answer prompts, benign look-alikes (harmless questions with alarming words) and gibberish
(answers labelled ``incoherent``). Only the ``test`` split is read; the classifier never trained
on it. Writes ``bench/results/judge_quality.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sap_core.harm_classifier import DEFAULT_WEIGHTS, HarmClassifier, MiniLMEmbedder  # noqa: E402
from sap_core.judge_set import load_judge_set  # noqa: E402
from sap_core.judges import HarmfulnessClassifierJudge, RefusalKeywordJudge  # noqa: E402

CANDIDATE_WEIGHTS = ROOT / "bench" / "harm_classifier_v2.json"
RESULTS = ROOT / "bench" / "results"
Row = dict[str, str]
# Slices of the test split: name -> which rows.
SLICES: dict[str, Callable[[Row], bool]] = {
    "all": lambda r: True,
    "harmful prompts": lambda r: r["kind"] in ("harmful", "align_harmful") and r["label"] != "incoherent",
    "do-not-answer": lambda r: r["kind"] == "dna" and r["label"] != "incoherent",
    "benign look-alikes": lambda r: r["kind"] == "lookalike" and r["label"] != "incoherent",
    "gibberish": lambda r: r["label"] == "incoherent",
}


def scores(rows: list[Row], predicted: list[bool], positive: str) -> dict[str, dict[str, float | int]]:
    """Counts, precision and recall of ``predicted`` against ``label == positive``, per slice."""
    out: dict[str, dict[str, float | int]] = {}
    for name, keep in SLICES.items():
        pairs = [(r["label"] == positive, p) for r, p in zip(rows, predicted, strict=True) if keep(r)]
        tp = sum(t and p for t, p in pairs)
        flagged = sum(p for _, p in pairs)
        positives = sum(t for t, _ in pairs)
        out[name] = {
            "n": len(pairs),
            "positives": positives,
            "flagged": flagged,
            "true_positives": tp,
            "precision": round(tp / flagged, 3) if flagged else float("nan"),
            "recall": round(tp / positives, 3) if positives else float("nan"),
        }
    return out


def _fmt(x: float | int) -> str:
    return "–" if isinstance(x, float) and x != x else str(x)


def markdown(results: dict[str, Any]) -> str:
    """One table: a row per (judge, slice)."""
    lines = [
        "### Judge quality on the held-out labelled answers",
        "",
        f"{results['n_test']} held-out answers of our SmolLM2 models, labelled by hand "
        "(`sap_core/resources/judge_set`). Refusal judge: positives = answers labelled `refusal`; "
        "harm classifier: positives = answers labelled `harmful`. flagged = the judge said yes.",
        "",
        "| judge | slice | n | positives | flagged | true pos. | precision | recall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for judge, by_slice in results["judges"].items():
        for name, m in by_slice.items():
            cells = [m[k] for k in ("n", "positives", "flagged", "true_positives", "precision", "recall")]
            lines.append(f"| {judge} | {name} | " + " | ".join(_fmt(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Judge every held-out answer with each judge and write the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "judge_quality.md")
    args = parser.parse_args()
    rows = load_judge_set("test")
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    embedder = MiniLMEmbedder()
    keyword = RefusalKeywordJudge()
    judges: dict[str, dict] = {
        f"refusal_keyword v{keyword.version}": scores(
            rows, [v.refused for v in keyword.judge(prompts, responses)], "refusal"
        )
    }
    for tag, path in (("shipped v1", DEFAULT_WEIGHTS), ("candidate v2", CANDIDATE_WEIGHTS)):
        judge = HarmfulnessClassifierJudge(HarmClassifier.load(path, embedder=embedder))
        verdicts = judge.judge(prompts, responses)
        judges[f"harm_classifier {tag} ({judge.version})"] = scores(
            rows, [v.harmful for v in verdicts], "harmful"
        )
    results: dict[str, Any] = {"n_test": len(rows), "judges": judges}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(results), encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(markdown(results))  # noqa: T201


if __name__ == "__main__":
    main()
