"""Parameter-space EMA of the trainable weights (sap_ema.md §2.2).

θ̄_0 = θ_0 (the aligned starting weights, never zero) and θ̄_t = λ·θ̄_{t-1} + (1−λ)·θ_t after every
optimizer step, with no decay warm-up: a warm-up such as min(λ, (1+t)/(10+t)) would wash out θ_0,
which is the whole point (the result is a WiSE-FT-like mix with weight λ^T on θ_0). With LoRA this is
the EMA of the A/B factors, not of ΔW = BA (cheap; both start at the safe point B = 0).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class ParamEma:
    """Shadow fp32 copy of a model's trainable parameters."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        """Snapshot the current trainable weights as θ̄_0.

        Args:
            model: Model whose `requires_grad` parameters are averaged.
            decay: λ in [0, 1]; 1 keeps θ_0 forever, 0 tracks the live weights.
        """
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay={decay!r}: must be in [0, 1]")
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        # fp32 shadows: under bf16 a (1-λ)=0.01 update would be lost to rounding.
        self.shadow = [p.detach().float().clone() for p in self.params]
        self.num_updates = 0

    @torch.no_grad()
    def update(self) -> None:
        """θ̄ ← λ·θ̄ + (1−λ)·θ, called once after each optimizer step."""
        for s, p in zip(self.shadow, self.params, strict=True):
            s.lerp_(p.detach().float(), 1.0 - self.decay)
        self.num_updates += 1

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Temporarily load the EMA weights into the model (for eval/export); restore on exit."""
        backup = [p.detach().clone() for p in self.params]
        self.copy_to_model()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup, strict=True):
                    p.copy_(b)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Overwrite the live trainable weights with the EMA weights (final export)."""
        for s, p in zip(self.shadow, self.params, strict=True):
            p.copy_(s.to(p.dtype))

    def state_dict(self) -> dict[str, Any]:
        """Shadow weights (by parameter name), decay and update count."""
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow": {n: s.cpu() for n, s in zip(self.names, self.shadow, strict=True)},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`; parameter names must match."""
        if sorted(state["shadow"]) != sorted(self.names):
            raise ValueError("EMA state does not match the model's trainable parameters")
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        self.shadow = [
            state["shadow"][n].to(p.device).float() for n, p in zip(self.names, self.params, strict=True)
        ]
