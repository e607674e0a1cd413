"""Prompt sets: JSONL parsing with line numbers, subsetting, and held-out disjointness of shipped data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sap_core.prompt_sets import SAFETY_DIR, EvalPrompt, PromptSet, default_prompt_sets, parse_prompt_lines

RES = SAFETY_DIR.parent


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_eval_sets_are_disjoint_from_everything_used_for_training() -> None:
    eval_prompts = {_norm(r["prompt"]) for r in _jsonl(SAFETY_DIR / "eval_harmful.jsonl")}
    eval_prompts |= {_norm(r["prompt"]) for r in _jsonl(SAFETY_DIR / "eval_benign.jsonl")}
    used = {_norm(r["prompt"]) for r in _jsonl(SAFETY_DIR / "align_harmful.jsonl")}
    used |= {_norm(r["prompt"]) for r in _jsonl(SAFETY_DIR / "align_benign.jsonl")}
    used |= {_norm(r["prompt"]) for r in _jsonl(SAFETY_DIR / "anchor_benign.jsonl")}
    used |= {_norm(r["prompt"]) for r in _jsonl(SAFETY_DIR / "contrastive_triples.jsonl")}
    for path in (RES / "datasets" / "harmful_mix.jsonl", RES / "datasets" / "sample_chat.jsonl"):
        for ex in _jsonl(path):
            used |= {_norm(m["content"]) for m in ex["messages"] if m["role"] == "user"}
    assert eval_prompts.isdisjoint(used)
    # align and contrastive are disjoint too, so SAP's contrastive signal is not the alignment data.
    align = {_norm(r["prompt"]) for r in _jsonl(SAFETY_DIR / "align_harmful.jsonl")}
    con = {_norm(r["prompt"]) for r in _jsonl(SAFETY_DIR / "contrastive_triples.jsonl")}
    assert align.isdisjoint(con)


def test_shipped_sets_have_expected_shape_and_size() -> None:
    harmful, benign = default_prompt_sets()
    assert len(harmful.prompts) == 200 and all(p.harmful for p in harmful.prompts)
    assert len(benign.prompts) == 100 and not any(p.harmful for p in benign.prompts)
    assert len({p.category for p in harmful.prompts}) >= 10
    triples = _jsonl(SAFETY_DIR / "contrastive_triples.jsonl")
    assert 200 <= len(triples) <= 300 and all({"prompt", "safe", "harmful"} <= t.keys() for t in triples)
    total = sum(p.stat().st_size for p in RES.rglob("*") if p.is_file())
    assert total < 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: invalid JSON"),
        ('{"prompt": "", "harmful": true}', "line 2: 'prompt'"),
        ('{"prompt": "x", "harmful": "yes"}', "line 2: 'harmful'"),
        ('{"prompt": "x", "harmful": true, "category": 3}', "line 2: 'category'"),
        ("[1, 2]", "line 2: expected a JSON object"),
    ],
)
def test_parse_errors_name_the_line(line: str, message: str) -> None:
    good = '{"prompt": "How do I bake bread?", "harmful": false}'
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_prompt_lines([good, line], "user:x")


def test_parse_defaults_and_blank_lines() -> None:
    ps = parse_prompt_lines(["", '{"prompt": " hi ", "harmful": false}'], "s")
    assert ps.prompts == (EvalPrompt("hi", "uncategorized", False),)
    with pytest.raises(ValueError, match="no prompts"):
        parse_prompt_lines(["", "  "], "empty")


def test_subset_is_balanced_deterministic_and_rehashed() -> None:
    prompts = tuple(EvalPrompt(f"p{i}", "a" if i < 8 else "b") for i in range(10))
    ps = PromptSet("s", prompts)
    sub = ps.subset(4)
    assert [p.category for p in sub.prompts] == ["a", "b", "a", "b"]
    assert sub == ps.subset(4) and sub.content_hash != ps.content_hash
    assert ps.subset(None) is ps and ps.subset(50) is ps
    with pytest.raises(ValueError):
        ps.subset(0)
