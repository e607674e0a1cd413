"""The one interface every training guard implements, and the adapters for EMA and SAP.

`finetune` calls, per optimizer step: ``step_context`` around the task forward/backward passes,
``micro_batch_loss`` for each micro-batch (None = plain cross-entropy), ``after_backward`` once the
task gradient is accumulated, ``after_optimizer_step`` after AdamW; ``eval_context`` around every
validation pass and ``finish`` once at the end. A composed guard ("anchor+constrained") is a list of
these, called in order; at most one of them may replace the micro-batch loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from sap_core.ema import ParamEma
from sap_core.guard import SapGuard

Batch = dict[str, torch.Tensor]


class StepGuard:
    """No-op defaults; a guard overrides the hooks it needs."""

    name = "none"
    replaces_loss = False  # True when micro_batch_loss returns an objective (at most one per job)

    def step_context(self, batches: Sequence[Batch]) -> contextlib.AbstractContextManager[Any]:
        """Context around this step's task passes (SAP inserts its probe here)."""
        return contextlib.nullcontext()

    def micro_batch_loss(
        self, batch: Batch, example_ids: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(objective to backpropagate, detached cross-entropy to report) for one micro-batch, or None.

        Both stay on the device: `finetune` reads the reported loss only when a callback asks.
        """
        return None

    def after_backward(self, batches: Sequence[Batch]) -> None:
        """Called with the accumulated task gradient in ``.grad``, before clipping and the step."""

    def after_optimizer_step(self) -> None:
        """Called after every optimizer step."""

    def eval_context(self) -> contextlib.AbstractContextManager[Any]:
        """Context around validation (EMA swaps its shadow weights in)."""
        return contextlib.nullcontext()

    def finish(self) -> None:
        """Called once after the last step, before export."""

    def settings(self) -> dict[str, Any]:
        """What the report records about this guard beyond its config (e.g. anchor set size)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Resume state (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`."""


class EmaGuard(StepGuard):
    """Parameter EMA of the trainable weights; validation and export see the average."""

    name = "ema"

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.ema = ParamEma(model, decay)

    def after_optimizer_step(self) -> None:
        self.ema.update()

    def eval_context(self) -> contextlib.AbstractContextManager[Any]:
        return self.ema.swapped_in()

    def finish(self) -> None:
        self.ema.copy_to_model()  # the exported adapter is the EMA (sap_ema.md §2.2)

    def state_dict(self) -> dict[str, Any]:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.load_state_dict(state)


class SapStepGuard(StepGuard):
    """SAP: a probe computed for each step and inserted only during the task passes."""

    name = "sap"

    def __init__(self, sap: SapGuard) -> None:
        self.sap = sap
        self._probe: list[torch.Tensor] | None = None

    @contextlib.contextmanager
    def step_context(self, batches: Sequence[Batch]) -> Any:
        self._probe = self.sap.probe_for_step(batches)
        with self.sap.probe_inserted(self._probe):
            yield

    def after_backward(self, batches: Sequence[Batch]) -> None:
        if self._probe is not None:
            self.sap.after_backward(batches, self._probe)

    def state_dict(self) -> dict[str, Any]:
        return self.sap.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sap.load_state_dict(state)
