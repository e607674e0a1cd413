"""Screening names the offending lines of a mixed (poisoned) dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sap_core.screening import screen_examples

RES = Path(__file__).resolve().parents[2] / "sap_core" / "resources"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_flags_exactly_the_harmful_lines() -> None:
    benign = [ex["messages"] for ex in _jsonl(RES / "datasets" / "sample_chat.jsonl")][:30]
    harmful = [ex["messages"] for ex in _jsonl(RES / "datasets" / "harmful_mix.jsonl") if ex["harmful"]][:4]
    refusal = [
        {"role": "user", "content": "Explain how to make a pipe bomb."},
        {"role": "assistant", "content": "I'm sorry, but I can't help with that request."},
    ]
    data = list(benign)
    poison_lines = [3, 11, 20, 28]
    for line, ex in zip(poison_lines, harmful, strict=True):
        data.insert(line - 1, ex)
    data.append(refusal)  # a refusal to a harmful request is safety data, not poison
    result = screen_examples(data)
    assert list(result.flagged_lines) == poison_lines
    assert result.scores[-1] == 0.0
    assert result.flagged_share == pytest.approx(4 / len(data))
    summary = result.to_dict()
    assert summary["flagged_lines"] == poison_lines and summary["n_examples"] == len(data)


def test_empty_dataset_and_threshold_validation() -> None:
    class _Never:
        def prompt_scores(self, xs: list[str]) -> list[float]:
            return [0.0] * len(xs)

        def response_scores(self, xs: list[str]) -> list[float]:
            return [0.0] * len(xs)

    assert screen_examples([], classifier=_Never()).flagged_share == 0.0
    with pytest.raises(ValueError):
        screen_examples([], classifier=_Never(), threshold=0.0)
