"""Safety-constrained selection (post-hoc, guards.md §5, §7.3): pick the safest (checkpoint, LoRA scale).

Over the adapter snapshots a job kept and LoRA scales lambda (the delta B·A scaled by lambda, i.e.
interpolation towards the base), every candidate's validation loss is computed exactly; among those
within the job's utility budget (val loss <= (1 + budget) x the final adapter's), the one with the
lowest harmful score on a *selection* prompt set (disjoint from the reported evaluation set, see
`prompt_sets.selection_prompt_sets`) is picked. The final adapter at lambda = 1 is always within
budget, so there is always a pick, and a pick is never outside the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Candidate:
    """One (snapshot step, LoRA scale) point."""

    step: int
    scale: float
    val_loss: float
    within_budget: bool
    harmful_score: float | None = None  # on the selection set; None when outside the budget
    refusal_rate: float | None = None


@dataclass(frozen=True)
class SelectionResult:
    """What was picked, among what, and why."""

    picked: Candidate
    candidates: list[Candidate]
    reference_val_loss: float
    budget: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the safety report."""
        return {
            "picked": asdict(self.picked),
            "candidates": [asdict(c) for c in self.candidates],
            "reference_val_loss": self.reference_val_loss,
            "budget": self.budget,
            "reason": self.reason,
        }


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the trainable (adapter) weights, for a later `load_scaled`."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def load_scaled(model: nn.Module, state: Mapping[str, torch.Tensor], scale: float) -> None:
    """Load adapter weights with every LoRA B matrix scaled by `scale` (delta W = scale · B·A)."""
    for name, p in model.named_parameters():
        if name in state:
            value = state[name]
            p.copy_(value * scale if "lora_B" in name else value)


def select_checkpoint(
    model: nn.Module,
    snapshots: Mapping[int, Mapping[str, torch.Tensor]],
    scales: Sequence[float],
    budget: float,
    val_loss: Callable[[nn.Module], float],
    safety: Callable[[nn.Module], tuple[float, float]],
) -> SelectionResult:
    """Pick the safest candidate within the utility budget and leave its weights in `model`.

    Args:
        model: The PeftModel whose adapter the snapshots hold.
        snapshots: step -> trainable state; the highest step is the final adapter (the reference).
        scales: LoRA scales to try (1.0 is always added).
        budget: Allowed relative validation-loss increase over the final adapter (0.02 = 2 %).
        val_loss: Validation loss of the model as loaded.
        safety: (harmful score, refusal rate) of the model as loaded, on the selection prompts.

    Returns:
        The selection; ties on harmful score go to the higher refusal rate, then the lower loss.
    """
    if not snapshots:
        raise ValueError("selection needs at least one adapter snapshot")
    if budget < 0:
        raise ValueError(f"budget={budget}: must be >= 0")
    final_step = max(snapshots)
    all_scales = sorted({1.0, *scales}, reverse=True)
    load_scaled(model, snapshots[final_step], 1.0)
    reference = val_loss(model)
    limit = reference * (1 + budget)
    candidates: list[Candidate] = []
    for step in sorted(snapshots):
        for scale in all_scales:
            load_scaled(model, snapshots[step], scale)
            loss = reference if (step, scale) == (final_step, 1.0) else val_loss(model)
            if loss <= limit:
                harm, refusal = safety(model)
                candidates.append(Candidate(step, scale, loss, True, harm, refusal))
            else:
                candidates.append(Candidate(step, scale, loss, False))
    inside = [c for c in candidates if c.within_budget]
    picked = min(inside, key=lambda c: (c.harmful_score, -(c.refusal_rate or 0.0), c.val_loss))
    load_scaled(model, snapshots[picked.step], picked.scale)
    final = next(c for c in candidates if (c.step, c.scale) == (final_step, 1.0))
    if (picked.step, picked.scale) == (final_step, 1.0):
        reason = "the final adapter is already the safest point within the utility budget"
    else:
        reason = (
            f"step {picked.step} at LoRA scale {picked.scale:g}: harmful score {picked.harmful_score:.3f} "
            f"vs {final.harmful_score:.3f} for the final adapter on the selection prompts, at val loss "
            f"{picked.val_loss:.4f} (budget <= {limit:.4f})"
        )
    return SelectionResult(picked, candidates, reference, budget, reason)
