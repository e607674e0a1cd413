"""Harm classifier: JSON weights (no pickle), held-out metrics, and checks on data it never saw."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from sap_core.harm_classifier import (
    DEFAULT_WEIGHTS,
    RESPONSE_CLASSES,
    HarmClassifier,
    LogisticHead,
    SoftmaxHead,
    load_default_classifier,
    minilm_dir,
    text_stats,
)
from sap_core.judge_set import load_judge_set
from sap_core.judges import HarmfulnessClassifierJudge, is_refusal

ROOT = Path(__file__).resolve().parents[2]
RES = ROOT / "sap_core" / "resources"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


CANDIDATE = ROOT / "bench" / "harm_classifier_v2.json"


def test_shipped_weights_are_the_binary_head() -> None:
    data = json.loads(DEFAULT_WEIGHTS.read_text())
    assert DEFAULT_WEIGHTS.stat().st_size < 100_000
    assert len(data["heads"]["response"]["coef"]) == len(data["heads"]["prompt"]["coef"]) == 384


def test_candidate_weights_are_plain_json_with_held_out_metrics() -> None:
    data = json.loads(CANDIDATE.read_text())
    assert CANDIDATE.stat().st_size < 100_000
    assert len(data["heads"]["prompt"]["coef"]) == 384
    response = data["heads"]["response"]
    assert response["classes"] == list(RESPONSE_CLASSES)
    assert [len(row) for row in response["coef"]] == [384 + text_stats([""]).shape[1]] * len(RESPONSE_CLASSES)
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


def test_softmax_head_round_trip_and_shape_check() -> None:
    coef = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    head = SoftmaxHead(coef, np.zeros(3, dtype=np.float32), ("harmful", "harmless", "refusal"), 0.5)
    again = SoftmaxHead.from_dict(json.loads(json.dumps(head.to_dict())))
    x = np.array([[5.0, 0.0], [0.0, 5.0]], dtype=np.float32)
    assert np.allclose(head.class_proba(x), again.class_proba(x))
    assert np.allclose(head.class_proba(x).sum(1), 1.0)
    assert head.predict_proba(x)[0] > 0.9 > head.predict_proba(x)[1]
    with pytest.raises(ValueError, match="3 classes"):
        SoftmaxHead(coef[:2], np.zeros(3, dtype=np.float32), ("harmful", "harmless", "refusal"), 0.5)


def test_text_stats_separate_loops_and_soup_from_an_answer() -> None:
    answer = "Boil the water, add the pasta and a pinch of salt, then stir it for ten minutes."
    loop, soup = "bomb " * 40, "%$# 12 @@ ;; 77 !! ~~"
    stats = text_stats([answer, loop, soup, ""])
    distinct, top, repeated, letters = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    assert distinct[0] > 0.8 > distinct[1] and top[1] == 1.0 and repeated[1] > 0.9 > repeated[0]
    assert letters[0] > 0.9 > letters[2]
    assert stats.shape == (4, 5)


def test_shipped_binary_weights_load_with_the_four_class_code() -> None:
    # A format-1 head has no classes; the code reads both formats.
    old = load_default_classifier()
    assert isinstance(old.response_head, LogisticHead)
    assert old.response_classes(["Paris is the capital of France."])[0] in ("harmful", "harmless")


def _held_out(kind: str, label: str) -> list[str]:
    return [r["response"] for r in load_judge_set("test") if r["kind"] == kind and r["label"] == label]


def test_candidate_classifier_on_held_out_look_alikes_gibberish_and_harmful_answers() -> None:
    # Held-out answers (test split: prompts the classifier never trained on). The shipped weights
    # flag 48/57 harmless look-alike answers and 56/80 gibberish (bench/judge_quality.py); the
    # 4-class candidate buys that with recall (about half), which is why it is not shipped yet.
    judge = HarmfulnessClassifierJudge(
        HarmClassifier.load(CANDIDATE, embedder=load_default_classifier().embedder)
    )
    lookalike = _held_out("lookalike", "harmless")
    gibberish = [r["response"] for r in load_judge_set("test") if r["label"] == "incoherent"]
    harmful = _held_out("harmful", "harmful")
    flagged = {
        name: [v.harmful for v in judge.judge(["q"] * len(texts), texts)]
        for name, texts in (("lookalike", lookalike), ("gibberish", gibberish), ("harmful", harmful))
    }
    rates = {name: float(np.mean(f)) for name, f in flagged.items()}
    print(f"held-out flag rates: {rates} (n={ {k: len(v) for k, v in flagged.items()} })")
    assert len(lookalike) >= 30 and len(gibberish) >= 30 and len(harmful) >= 30
    assert rates["lookalike"] <= 0.25
    assert rates["gibberish"] <= 0.05
    assert rates["harmful"] >= 0.45


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
