"""The demo's comparison: base / plain / guarded rows and the verdict, from real sap_core reports.

The evaluations are the tiny random model's answers to a few held-out prompts (judged by the keyword
judge); the "tuned" evaluations are copies of the base one with chosen answers flipped, so the test
knows what each row must say.
"""

from __future__ import annotations

import copy

import pytest
import torch

from cli.demo_compare import comparison_rows, headline
from sap_core.judges import Verdict
from sap_core.modeling import build_tiny_llama
from sap_core.prompt_sets import default_prompt_sets
from sap_core.report import build_report
from sap_core.safety_eval import EvalConfig, ModelEval, evaluate_model


@pytest.fixture(scope="module")
def base_eval() -> ModelEval:
    torch.set_num_threads(1)
    model, tokenizer = build_tiny_llama(seed=0)
    cfg = EvalConfig(
        max_new_tokens=4, max_prompts=8, judges=("refusal_keyword",), primary_judge="refusal_keyword"
    )
    result = evaluate_model(model, tokenizer, default_prompt_sets(), cfg, model_name="tiny")
    # The tiny random model babbles; make it a base that refuses every harmful prompt.
    for row in result.rows(harmful=True):
        row.verdicts["refusal_keyword"] = Verdict(refused=True, harmful=False, score=0.0)
    return result


def tuned(base: ModelEval, comply: int) -> ModelEval:
    """The base evaluation with the first `comply` harmful prompts now answered."""
    out = copy.deepcopy(base)
    out.model_name = "tiny+adapter"
    for row in out.rows(harmful=True)[:comply]:
        row.verdicts["refusal_keyword"] = Verdict(refused=False, harmful=True, score=1.0)
    return out


def test_rows_show_what_plain_fine_tuning_lost_and_the_guard_kept(base_eval: ModelEval) -> None:
    plain = build_report(
        base_eval, tuned(base_eval, 6), utility={"val_loss_before": 2.0, "val_loss_after": 1.5}, training={}
    )
    guarded = build_report(
        base_eval, tuned(base_eval, 0), utility={"val_loss_before": 2.0, "val_loss_after": 1.53}, training={}
    )
    rows = comparison_rows(guarded, plain, base_model="tiny", guard="anchor", plain_guard="none")
    base, plain_row, guarded_row = rows
    assert [r.label for r in rows] == ["base tiny", "tuned, guard none", "tuned, guard anchor"]
    assert base.refusal.rate == 1.0 and base.val_loss == 2.0 and base.verdict is None
    assert plain_row.refusal.rate == pytest.approx(2 / 8) and plain_row.harmful.k == 6
    assert plain_row.verdict == "fail"  # 6 of 8 harmful answers now comply
    assert guarded_row.refusal.rate == 1.0 and guarded_row.harmful.k == 0
    # 8 prompts cannot rule out a 0.10 increase: a clean guarded run of this size only warns.
    assert guarded_row.verdict == "warn"
    assert plain_row.harmful.text().startswith("0.75 [")
    assert headline(rows) == (
        "refusal 1.00 before; tuned, guard none: 0.25, tuned, guard anchor: 1.00; "
        "val loss +2.0% vs tuned, guard none"
    )


def test_reports_of_different_prompt_sets_are_not_compared(base_eval: ModelEval) -> None:
    report = build_report(base_eval, tuned(base_eval, 0), utility={}, training={})
    other = copy.deepcopy(report)
    other["prompt_sets"][0]["hash"] = "something else"
    with pytest.raises(ValueError, match="different prompt sets"):
        comparison_rows(report, other, base_model="tiny", guard="sap", plain_guard="none")
