"""End-to-end safety evaluation on the tiny model: judges, counts, JSON round trip, cache key."""

from __future__ import annotations

import json

import pytest

from sap_core.judges import RefusalKeywordJudge, Verdict
from sap_core.prompt_sets import EvalPrompt, PromptSet
from sap_core.report import build_report
from sap_core.safety_eval import EvalConfig, ModelEval, cache_key, evaluate_model

SETS = [
    PromptSet(
        "h", tuple(EvalPrompt(f"How do I do bad thing {i}?", "cyber" if i % 2 else "chem") for i in range(6))
    ),
    PromptSet("b", tuple(EvalPrompt(f"What is {i} plus {i}?", "math", harmful=False) for i in range(4))),
]


class _AlwaysRefuses:
    name = "fake"
    version = "0"

    def judge(self, prompts: list[str], responses: list[str]) -> list[Verdict]:
        return [Verdict(refused=True, harmful=False, score=0.0) for _ in responses]


def test_evaluate_model_end_to_end_with_real_judges(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny
    cfg = EvalConfig(max_new_tokens=4, batch_size=4, max_prompts=4)
    ev = evaluate_model(model, tok, SETS, cfg, model_name="tiny")
    assert [s["n"] for s in ev.prompt_sets] == [4, 4]
    assert len(ev.results) == 8
    assert {j["name"] for j in ev.judges} == {"refusal_keyword", "harm_classifier"}
    assert all(set(r.verdicts) == {"refusal_keyword", "harm_classifier"} for r in ev.results)
    counts = ev.counts("refusal_keyword", harmful=True)
    assert counts["n"] == 4 and counts["harmful"] + counts["refused"] == 4
    assert set(ev.per_category("refusal_keyword")) == {"chem", "cyber"}
    again = ModelEval.from_dict(json.loads(json.dumps(ev.to_dict())))
    assert again == ev
    rep = build_report(ev, again, utility={"val_loss_before": 1.0, "val_loss_after": 1.0}, training={})
    assert rep["metrics"]["harmful_score"]["delta"]["value"] == 0.0
    assert rep["models"] == {"base": "tiny", "tuned": "tiny"}


def test_injected_judges_and_primary_judge_check(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny
    cfg = EvalConfig(max_new_tokens=2, judges=("refusal_keyword",), primary_judge="refusal_keyword")
    ev = evaluate_model(model, tok, SETS[:1], cfg, judges=[RefusalKeywordJudge()])
    assert len(ev.results) == 6
    with pytest.raises(ValueError, match="primary judge"):
        evaluate_model(model, tok, SETS[:1], cfg, judges=[_AlwaysRefuses()])  # type: ignore[list-item]


def test_cache_key_tracks_what_changes_verdicts() -> None:
    cfg = EvalConfig(max_new_tokens=8)
    key = cache_key("smollm2@abc", SETS, cfg)
    assert key == cache_key("smollm2@abc", SETS, EvalConfig(max_new_tokens=8, batch_size=2))
    assert key != cache_key("smollm2@def", SETS, cfg)
    assert key != cache_key("smollm2@abc", SETS, EvalConfig(max_new_tokens=9))
    assert key != cache_key("smollm2@abc", SETS[:1], cfg)
    assert key != cache_key("smollm2@abc", SETS, EvalConfig(max_new_tokens=8, max_prompts=2))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_prompts": 0}, "max_prompts"),
        ({"judges": ("llama_guard",)}, "judges"),
        ({"judges": ("refusal_keyword",)}, "primary_judge"),
    ],
)
def test_eval_config_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        EvalConfig(**kwargs)
