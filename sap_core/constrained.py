"""`constrained`: token-wise constrained SFT (Qi et al. 2024, "Safety Alignment Should Be Made More
Than Just a Few Tokens Deep"; guards.md §1.2, §7.2).

Per response token t with d_t = log p_tuned(y_t) - log p_base(y_t), the objective is

    (2 / beta_t) * softplus(-beta_t * d_t)          (= -(2/beta_t) log sigmoid(beta_t d_t))

whose gradient is w_t * (cross-entropy gradient) with w_t = 2 sigmoid(-beta_t d_t): exactly 1 while
the tuned model matches the base (so step 0 is plain SFT), and falling towards 0 as a token's
probability rises above the base's. A large beta on the first few response tokens holds the
opening of every answer (where a refusal is decided) close to the base; a small beta later lets
the task be learnt. The base log-probs are computed once per job with the adapter disabled.
Validation loss stays plain cross-entropy (`train.evaluation_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sap_core.config import ConstrainedConfig
from sap_core.data import EncodedExample, collate, move_tensor, to_device
from sap_core.modeling import autocast_for, base_model_context, target_logprobs
from sap_core.step_guard import Batch, StepGuard


def response_positions(mask: torch.Tensor) -> torch.Tensor:
    """1-based position of each labelled token within its contiguous response span (0 elsewhere).

    Args:
        mask: [B, N] bool, True at labelled (shifted) positions.

    Returns:
        [B, N] long; a new assistant turn restarts at 1.
    """
    m = mask.long()
    count = m.cumsum(-1)
    last_gap = torch.cummax(torch.where(mask, torch.zeros_like(count), count), dim=-1).values
    return (count - last_gap) * m


def position_betas(mask: torch.Tensor, config: ConstrainedConfig) -> torch.Tensor:
    """beta for every position: first_beta at 1, early_beta at 2..early_tokens, late_beta after."""
    pos = response_positions(mask)
    betas = torch.full(mask.shape, config.late_beta, dtype=torch.float32, device=mask.device)
    betas = torch.where(
        pos <= config.early_tokens, torch.tensor(config.early_beta, device=mask.device), betas
    )
    return torch.where(pos == 1, torch.tensor(config.first_beta, device=mask.device), betas)


def token_weights(logp: torch.Tensor, ref_logp: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """w_t = 2 sigmoid(beta_t (log p_base - log p_tuned)): each token's share of the CE gradient."""
    return 2 * torch.sigmoid(betas * (ref_logp - logp))


def constrained_objective(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, betas: torch.Tensor
) -> torch.Tensor:
    """Sum over labelled tokens of (2/beta) softplus(-beta (logp - ref_logp))."""
    per_token = (2.0 / betas) * F.softplus(-betas * (logp - ref_logp))
    return (per_token * mask).sum()


class ConstrainedGuard(StepGuard):
    """Replaces each micro-batch's cross-entropy with the constrained objective."""

    name = "constrained"
    replaces_loss = True

    def __init__(
        self,
        model: nn.Module,
        examples: Sequence[EncodedExample],
        config: ConstrainedConfig,
        pad_id: int,
        batch_size: int,
    ) -> None:
        self.model = model
        self.config = config
        self._pad_id = pad_id
        self.ref = _base_target_logprobs(model, examples, pad_id, batch_size)

    def micro_batch_loss(self, batch: Batch, example_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast_for(self.model):
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logp, mask = target_logprobs(logits, batch["labels"])
        # Filled on the host, then one non-blocking copy (a copy per row would sync per row on CUDA).
        ref_host = torch.zeros(logp.shape, dtype=logp.dtype)
        for row, i in enumerate(example_ids):
            ref_host[row, : len(self.ref[i])] = self.ref[i]
        ref = move_tensor(ref_host, logp.device)
        n = mask.sum().clamp_min(1)
        objective = constrained_objective(logp, ref, mask, position_betas(mask, self.config)) / n
        cross_entropy = -(logp.detach() * mask).sum() / n  # stays on the device (no per-batch sync)
        return objective, cross_entropy

    def settings(self) -> dict[str, Any]:
        return {"reference": "base model (adapter disabled), precomputed per job"}


@torch.no_grad()
def _base_target_logprobs(
    model: nn.Module, examples: Sequence[EncodedExample], pad_id: int, batch_size: int
) -> list[torch.Tensor]:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[torch.Tensor] = []
    try:
        with base_model_context(model):
            for start in range(0, len(examples), batch_size):
                chunk = examples[start : start + batch_size]
                batch = to_device(collate(chunk, pad_id), device)
                with autocast_for(model):
                    logits = model(
                        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                    ).logits
                logp, _ = target_logprobs(logits, batch["labels"])
                out += [logp[row, : len(e) - 1].cpu() for row, e in enumerate(chunk)]
    finally:
        model.train(was_training)
    return out
