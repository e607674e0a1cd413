"""The training child's guard plumbing: the anchor set (cached per base model), SAP's triples, the
post-hoc selection snapshots, and what the report records about the guard."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from sap_core.anchor import AnchorExample, build_anchor_set
from sap_core.config import TrainConfig, guard_parts
from sap_core.contrastive import ContrastiveTriple, default_contrastive_triples
from sap_core.prompt_sets import selection_prompt_sets
from sap_core.safety_eval import EvalConfig, evaluate_model
from sap_core.selection import SelectionResult, select_checkpoint, trainable_state
from sap_core.train import StepState, TrainingCallback, evaluation_loss
from worker.base_eval_keys import template_suffix
from worker.child_protocol import Event, SelectionEvent
from worker.model_digest import model_digest

ANCHOR_CACHE_DIR = ".anchor-cache"  # beside the model folders in the worker's model cache
SELECTION_MAX_NEW_TOKENS = 48


def model_revision(model_dir: Path) -> str:
    """Identity of a model folder's weights: its content digest (worker.model_digest, the key of the
    base-evaluation cache too, taken once per build), so a rebuilt folder misses every cache and an
    identical copy shares them."""
    digest = model_digest(model_dir)
    if digest is None:
        raise ValueError(f"{model_dir} is not a built model folder (no config.json)")
    return digest


def guard_inputs(
    model: nn.Module, tokenizer: Any, config: TrainConfig, base_model: str, model_dir: Path
) -> tuple[list[ContrastiveTriple] | None, list[AnchorExample] | None]:
    """SAP's contrastive triples and the anchor set, when the job's guard needs them."""
    parts = guard_parts(config.guard)
    triples = default_contrastive_triples() if "sap" in parts else None
    anchors = None
    if "anchor" in parts:
        anchors = build_anchor_set(
            model,
            tokenizer,
            config.anchor,
            cache_dir=model_dir.parent / ANCHOR_CACHE_DIR,
            model_id=anchor_model_id(base_model, model_dir),
        )
    return triples, anchors


def anchor_model_id(base_model: str, model_dir: Path) -> str:
    """The model part of an anchor set's key (also what scripts/ship_anchor_set.py ships under)."""
    return f"{base_model}@{model_revision(model_dir)}{template_suffix(base_model)}"


def guard_record(config: TrainConfig, settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The report's `guard` section: the name, its parts, each part's settings and what it did."""
    parts = guard_parts(config.guard)
    sections = config.to_dict()
    return {
        "name": config.guard,
        "parts": list(parts),
        "settings": {p: sections[p] for p in parts if isinstance(sections.get(p), dict)},
        "observed": settings,
    }


class SelectionSnapshots(TrainingCallback):
    """Keeps the adapter weights at evenly spaced steps, as candidates for post-hoc selection."""

    def __init__(self, model: nn.Module, snapshots: int) -> None:
        self.model, self.count = model, snapshots
        self.states: dict[int, dict[str, Any]] = {}

    def on_step_end(self, state: StepState) -> str | None:
        every = max(1, state.total_steps // self.count)
        if state.step % every == 0 and state.step < state.total_steps:
            self.states[state.step] = trainable_state(self.model)
        return None


def run_selection(
    model: nn.Module,
    tokenizer: Any,
    snapshots: dict[int, dict[str, Any]],
    final_step: int,
    options: dict[str, Any],
    utility_set: Sequence[Any],
    config: TrainConfig,
    emit: Callable[[Event], None],
) -> SelectionResult:
    """Pick the safest (snapshot, scale) within the job's utility budget; the model keeps the pick."""
    candidates = {**snapshots, final_step: trainable_state(model)}
    eval_cfg = EvalConfig(
        max_new_tokens=SELECTION_MAX_NEW_TOKENS,
        max_prompts=options.get("max_prompts"),
        judges=("refusal_keyword",),
        primary_judge="refusal_keyword",
    )
    # Only the harmful set decides the pick, so only it is answered (once per candidate).
    sets = selection_prompt_sets(harmful_only=True)
    done = [0]

    def safety(m: nn.Module) -> tuple[float, float]:
        ev = evaluate_model(m, tokenizer, sets, eval_cfg, model_name="selection")
        counts = ev.counts("refusal_keyword", harmful=True)
        done[0] += 1
        emit(SelectionEvent(candidates_scored=done[0]))
        return counts["harmful"] / counts["n"], counts["refused"] / counts["n"]

    def val_loss(m: nn.Module) -> float:
        return evaluation_loss(m, tokenizer, utility_set, config.max_seq_len, config.batch_size)

    return select_checkpoint(
        model,
        candidates,
        options.get("scales", [1.0]),
        float(options.get("utility_budget", 0.02)),
        val_loss,
        safety,
    )
