"""The labelled judge set: well-formed labels, and a test split the classifier never trained on."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from sap_core.judge_set import (
    LABELS,
    degenerate,
    load_judge_set,
    normalise_prompt,
    split_of,
)
from sap_core.prompt_sets import default_prompt_sets

RES = Path(__file__).resolve().parents[2] / "sap_core" / "resources"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _classifier_training_prompts() -> set[str]:
    """Every prompt scripts/train_harm_classifier.py reads, normalised."""
    used = {normalise_prompt(r["prompt"]) for r in load_judge_set("train")}
    for name in ("align_harmful", "align_benign", "contrastive_triples", "refusal_labelled"):
        used |= {normalise_prompt(r["prompt"]) for r in _jsonl(RES / "safety" / f"{name}.jsonl")}
    for name in ("harmful_mix", "sample_chat"):
        for ex in _jsonl(RES / "datasets" / f"{name}.jsonl"):
            used |= {normalise_prompt(m["content"]) for m in ex["messages"] if m["role"] == "user"}
    return used


def test_labels_are_well_formed_and_the_test_split_is_large_enough() -> None:
    rows = load_judge_set()
    assert all(r["label"] in LABELS and r["split"] in ("train", "test") for r in rows)
    test = load_judge_set("test")
    assert len(test) >= 200
    assert set(Counter(r["label"] for r in test)) == set(LABELS)
    assert {r["kind"] for r in test} >= {"harmful", "dna", "lookalike"}
    # The stored split is the rule's split (nobody moved a row by hand).
    hand = [r for r in rows if not r["source"].startswith("synthetic:")]
    assert all(r["split"] == split_of(r["prompt"], r["kind"]) for r in hand)


def test_test_prompts_are_disjoint_from_classifier_training_and_frontier_eval_prompts() -> None:
    test = {normalise_prompt(r["prompt"]) for r in load_judge_set("test")}
    frontier = {normalise_prompt(p.prompt) for s in default_prompt_sets() for p in s.prompts}
    assert test.isdisjoint(_classifier_training_prompts())
    assert test.isdisjoint(frontier)
    # The written prompts collide with no shipped file at all, train split included.
    written = {normalise_prompt(r["prompt"]) for r in _jsonl(RES / "judge_set" / "prompts.jsonl")}
    assert written.isdisjoint(frontier)


def test_split_needs_a_known_name() -> None:
    with pytest.raises(ValueError, match="split must be"):
        load_judge_set("validation")


@pytest.mark.parametrize("kind", ["word_salad", "loop"])
def test_degenerate_text_is_reproducible_and_keeps_the_source_words(kind: str) -> None:
    text = "Mix the two liquids in a sealed bottle and shake it hard before you leave the room"
    a, b = degenerate(text, kind, random.Random(3)), degenerate(text, kind, random.Random(3))
    assert a == b and a != text
    assert set(a.split()) <= set(text.split())
    with pytest.raises(ValueError, match="unknown degenerate kind"):
        degenerate(text, "poetry", random.Random(0))
