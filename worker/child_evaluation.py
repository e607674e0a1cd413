"""The post-training safety evaluation, run inside the training child on the model it just trained.

Base-model results come from the supervisor's cache when present (worker.base_eval_keys: keyed by
the model folder's content, prompt sets, judge versions and generation settings; the user's own set
scoped to its tenant), so every job pays only for evaluating its own adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sap_core.config import TrainConfig
from sap_core.report import ReportThresholds, build_report
from sap_core.safety_eval import EvalConfig, ModelEval, evaluate_model
from worker.base_eval_keys import BaseEvalNeed, base_eval_needs, eval_config_from_options
from worker.child_protocol import BaseEvalEvent, ChildRequest, Event

FINGERPRINT_TEXT = "safetune adapter fingerprint: the quick brown fox"
Emit = Callable[[Event], None]


def _base_eval(
    model: Any,
    tokenizer: Any,
    need: BaseEvalNeed,
    cfg: EvalConfig,
    *,
    base_model: str,
    cache: dict[str, Any],
    emit: Emit,
) -> ModelEval:
    if need.key is not None and need.key in cache:
        return ModelEval.from_dict(cache[need.key])
    with model.disable_adapter():
        result = evaluate_model(model, tokenizer, need.prompt_sets, cfg, model_name=base_model)
    if need.key is not None:
        emit(BaseEvalEvent(key=need.key, scope=need.scope, base_model=base_model, result=result.to_dict()))
    return result


def _compare_sets(
    model: Any,
    tokenizer: Any,
    need: BaseEvalNeed,
    cfg: EvalConfig,
    *,
    request: ChildRequest,
    training: dict[str, Any],
    utility: dict[str, Any],
    thresholds: ReportThresholds,
    emit: Emit,
) -> dict[str, Any]:
    base = _base_eval(
        model,
        tokenizer,
        need,
        cfg,
        base_model=request.base_model,
        cache=request.base_eval_cache,
        emit=emit,
    )
    tuned = evaluate_model(
        model, tokenizer, need.prompt_sets, cfg, model_name=f"{request.base_model}+adapter"
    )
    return build_report(
        base,
        tuned,
        utility=utility,
        training=training,
        thresholds=thresholds,
        primary_judge=cfg.primary_judge,
    )


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers (also stored as columns) in one flat dict."""
    metrics = report["metrics"]
    utility = report.get("utility", {})
    return {
        "base_harmful_score": metrics["harmful_score"]["base"]["rate"],
        "tuned_harmful_score": metrics["harmful_score"]["tuned"]["rate"],
        "base_refusal_rate": metrics["refusal_rate"]["base"]["rate"],
        "tuned_refusal_rate": metrics["refusal_rate"]["tuned"]["rate"],
        "base_over_refusal_rate": metrics["over_refusal_rate"]["base"]["rate"],
        "tuned_over_refusal_rate": metrics["over_refusal_rate"]["tuned"]["rate"],
        "loss_before": utility.get("val_loss_before"),
        "loss_after": utility.get("val_loss_after"),
    }


@torch.no_grad()
def adapter_fingerprint(model: Any, tokenizer: Any) -> dict[str, Any]:
    """Logits of the trained model on a fixed text, so a downloaded adapter can be checked against it."""
    model.eval()
    ids = tokenizer(FINGERPRINT_TEXT, return_tensors="pt").to(next(model.parameters()).device)
    logits = model(**ids).logits[0, -1].float().cpu()
    return {
        "text": FINGERPRINT_TEXT,
        "last_logits_head": logits[:16].tolist(),
        "last_logits_sum": float(logits.sum()),
    }


def run_safety_evaluation(
    model: Any,
    tokenizer: Any,
    *,
    request: ChildRequest,
    config: TrainConfig,
    options: dict[str, Any],
    utility: dict[str, Any],
    screening: dict[str, Any] | None,
    emit: Emit,
) -> dict[str, Any]:
    """Evaluate base vs fine-tuned on the shipped held-out sets (and the user's set, reported apart)."""
    cfg = eval_config_from_options(options)
    thresholds = ReportThresholds(**(options.get("thresholds") or {}))
    training = {"base_model": request.base_model, **config.to_dict()}
    common: dict[str, Any] = {
        "request": request,
        "training": training,
        "utility": utility,
        "thresholds": thresholds,
        "emit": emit,
    }
    shipped, *user = base_eval_needs(
        request.base_model, Path(request.model_cache), options, request.eval_prompts_path
    )
    report = _compare_sets(model, tokenizer, shipped, cfg, **common)
    if user:
        report["user_prompt_set"] = _compare_sets(model, tokenizer, user[0], cfg, **common)
    if cfg.llm_judge is not None:  # the report names the judge that decided (never its key)
        report["llm_judge"] = {
            "model": cfg.llm_judge.model,
            "format": cfg.llm_judge.format,
            "url": cfg.llm_judge.url,
        }
    report["summary"] = summarize(report)
    report["screening"] = screening
    report["adapter_fingerprint"] = adapter_fingerprint(model, tokenizer)
    return report
