"""The post-training safety evaluation, run inside the training child on the model it just trained.

Base-model results come from the supervisor's cache when present (worker.base_eval_keys: keyed by
the model folder's content, prompt sets, judge versions and generation settings; the user's own set
scoped to its tenant), so every job pays only for evaluating its own adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sap_core.config import TrainConfig
from sap_core.generation_engines import (
    VLLM,
    EngineFailed,
    GenerationEngine,
    GenerationRequest,
    TransformersEngine,
    VllmEngine,
    select_engine,
)
from sap_core.judges import build_judges
from sap_core.prompt_sets import PromptSet
from sap_core.report import ReportThresholds, build_report
from sap_core.safety_eval import EvalConfig, ModelEval, generation_settings, judge_answers, selected_sets
from worker.base_eval_keys import BaseEvalNeed, base_eval_needs, eval_config_from_options
from worker.child_protocol import BaseEvalEvent, ChildRequest, Event
from worker.stage_progress import StageProgress

FINGERPRINT_TEXT = "safetune adapter fingerprint: the quick brown fox"
Emit = Callable[[Event], None]


@dataclass
class _Plan:
    """One base-vs-tuned comparison: its sets, the cached base (if any) and where its answers land."""

    need: BaseEvalNeed
    chosen: list[PromptSet]
    cached: dict[str, Any] | None
    base_at: int | None  # offset of the base answers in the engine's request list (None: cached)
    tuned_at: int


def _plan(
    needs: list[BaseEvalNeed], cfg: EvalConfig, cache: dict[str, Any]
) -> tuple[list[_Plan], list[GenerationRequest]]:
    # Every answer of the whole evaluation in one request list: one engine (one vLLM start) serves
    # the base and the base+adapter of every prompt set.
    plans: list[_Plan] = []
    requests: list[GenerationRequest] = []
    for need in needs:
        chosen = selected_sets(need.prompt_sets, cfg)
        prompts = [p.prompt for ps in chosen for p in ps.prompts]
        cached = cache.get(need.key) if need.key is not None else None
        base_at = None
        if cached is None:
            base_at = len(requests)
            requests += [GenerationRequest(p, adapter=False) for p in prompts]
        plans.append(_Plan(need, chosen, cached, base_at, len(requests)))
        requests += [GenerationRequest(p, adapter=True) for p in prompts]
    return plans, requests


def _per_set(answers: list[str], start: int, chosen: list[PromptSet]) -> list[list[str]]:
    out = []
    for ps in chosen:
        out.append(answers[start : start + len(ps.prompts)])
        start += len(ps.prompts)
    return out


def _evaluate(
    engine: GenerationEngine, options: dict[str, Any], request: ChildRequest, emit: Emit
) -> list[tuple[ModelEval, ModelEval]]:
    """(base, tuned) evaluations of the shipped sets, then of the user's set when the job has one."""
    cfg = eval_config_from_options(options, engine=engine.name)
    base_model = request.base_model
    needs = base_eval_needs(
        base_model, Path(request.model_cache), options, request.eval_prompts_path, engine=engine.name
    )
    plans, requests = _plan(needs, cfg, request.base_eval_cache)
    # One count for the stage: every answer it generates (the cached base answers are not among them).
    progress = StageProgress(emit, "evaluating", len(requests))
    progress.begin()
    answers = engine.answer(requests, generation_settings(cfg), progress=progress.update)
    judges = build_judges(cfg.judges, cfg.llm_judge)
    pairs = []
    for plan in plans:
        if plan.cached is not None:
            base = ModelEval.from_dict(plan.cached)
        else:
            assert plan.base_at is not None
            responses = _per_set(answers, plan.base_at, plan.chosen)
            base = judge_answers(plan.chosen, responses, cfg, judges=judges, model_name=base_model)
            if plan.need.key is not None:
                result = base.to_dict()
                emit(
                    BaseEvalEvent(
                        key=plan.need.key, scope=plan.need.scope, base_model=base_model, result=result
                    )
                )
        responses = _per_set(answers, plan.tuned_at, plan.chosen)
        tuned = judge_answers(plan.chosen, responses, cfg, judges=judges, model_name=f"{base_model}+adapter")
        pairs.append((base, tuned))
    return pairs


def _engine(
    model: Any,
    tokenizer: Any,
    request: ChildRequest,
    config: TrainConfig,
    folders: tuple[Path, Path] | None,
) -> tuple[GenerationEngine, str | None]:
    device = str(next(model.parameters()).device)
    choice = select_engine(device, request.eval_engine)
    if choice.name == VLLM:
        if folders is None:
            return TransformersEngine(model, tokenizer), "vLLM needs the base and saved adapter folders"
        return VllmEngine(tokenizer, folders[0], folders[1], config.lora.r), None
    return TransformersEngine(model, tokenizer), choice.fallback_reason


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
    base_dir: Path | None = None,
    adapter_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate base vs fine-tuned on the shipped held-out sets (and the user's set, reported apart).

    The answers come from the engine `select_engine` picks for this device and the request's
    `eval_engine` (vLLM on a GPU worker that has it, else transformers); a vLLM run that fails falls
    back to transformers, and the report's `generation` says which engine produced the answers.
    """
    thresholds = ReportThresholds(**(options.get("thresholds") or {}))
    training = {"base_model": request.base_model, **config.to_dict()}
    folders = (base_dir, adapter_dir) if base_dir is not None and adapter_dir is not None else None
    engine, fallback = _engine(model, tokenizer, request, config, folders)
    try:
        pairs = _evaluate(engine, options, request, emit)
    except EngineFailed as exc:
        fallback = f"vLLM failed, answers regenerated with transformers: {exc}"
        pairs = _evaluate(TransformersEngine(model, tokenizer), options, request, emit)
    (base, tuned), *user = pairs
    judging = eval_config_from_options(options)
    llm = judging.llm_judge
    common: dict[str, Any] = {
        "utility": utility,
        "training": training,
        "thresholds": thresholds,
        "primary_judge": judging.primary_judge,
    }
    report = build_report(base, tuned, **common)
    if user:
        report["user_prompt_set"] = build_report(*user[0], **common)
    if fallback is not None:
        report["generation"] = {**report["generation"], "engine_fallback_reason": fallback}
    if llm is not None:  # the report names the judge that decided (never its key)
        report["llm_judge"] = {"model": llm.model, "format": llm.format, "url": llm.url}
    report["summary"] = summarize(report)
    report["screening"] = screening
    report["adapter_fingerprint"] = adapter_fingerprint(model, tokenizer)
    return report
