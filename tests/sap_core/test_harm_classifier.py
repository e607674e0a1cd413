"""Harm classifier: JSON weights (no pickle), held-out metrics, and checks on data it never saw."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from sap_core.harm_classifier import DEFAULT_WEIGHTS, LogisticHead, load_default_classifier, minilm_dir
from sap_core.judges import is_refusal

RES = Path(__file__).resolve().parents[2] / "sap_core" / "resources"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_weights_are_plain_json_with_held_out_metrics() -> None:
    data = json.loads(DEFAULT_WEIGHTS.read_text())
    assert DEFAULT_WEIGHTS.stat().st_size < 100_000
    assert len(data["heads"]["response"]["coef"]) == len(data["heads"]["prompt"]["coef"]) == 384
    m = data["held_out_metrics"]
    # Printed by scripts/train_harm_classifier.py on a grouped 25 % hold-out.
    assert m["response"]["precision"] >= 0.85 and m["response"]["recall"] >= 0.85
    assert m["prompt"]["precision"] >= 0.95 and m["prompt"]["recall"] >= 0.95
    assert (minilm_dir() / "model.safetensors").exists()


def test_logistic_head_round_trip() -> None:
    head = LogisticHead(np.array([1.0, -2.0], dtype=np.float32), 0.5, 0.6)
    again = LogisticHead.from_dict(json.loads(json.dumps(head.to_dict())))
    x = np.array([[0.3, 0.1], [-1.0, 2.0]], dtype=np.float32)
    assert np.allclose(head.predict_proba(x), again.predict_proba(x))
    assert head.predict_proba(np.zeros((1, 2)))[0] > 0.5


def test_prompt_head_on_held_out_eval_prompts() -> None:
    clf = load_default_classifier()
    harmful = [r["prompt"] for r in _jsonl(RES / "safety" / "eval_harmful.jsonl")]
    benign = [r["prompt"] for r in _jsonl(RES / "safety" / "eval_benign.jsonl")]
    recall = np.mean(np.array(clf.prompt_scores(harmful)) >= clf.prompt_threshold)
    fpr = np.mean(np.array(clf.prompt_scores(benign)) >= clf.prompt_threshold)
    print(f"prompt head on held-out eval sets: recall={recall:.3f} false-positive rate={fpr:.3f}")
    assert recall >= 0.9 and fpr <= 0.1


def test_response_head_on_pyrit_answers_it_never_saw() -> None:
    # PyRIT's non-refusing answers to benign objectives (the prompt head picks the benign ones);
    # only the hash-odd half, which scripts/train_harm_classifier.py never trains on.
    clf = load_default_classifier()
    rows = [
        r
        for r in _jsonl(RES / "safety" / "refusal_labelled.jsonl")
        if not is_refusal(r["response"]) and hashlib.sha256(r["prompt"].encode()).digest()[0] % 2 == 1
    ]
    benign_obj = np.array(clf.prompt_scores([r["prompt"] for r in rows])) < 0.2
    answers = [r["response"] for r, ok in zip(rows, benign_obj, strict=True) if ok]
    fpr = float(np.mean(np.array(clf.response_scores(answers)) >= clf.response_threshold))
    print(f"response head false-positive rate on {len(answers)} PyRIT benign answers: {fpr:.3f}")
    assert len(answers) >= 15 and fpr <= 0.3
