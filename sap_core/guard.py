"""SAP guard: Safety-Aware Probing (sap_ema.md §1.11, clean-room).

Per optimizer step:
  ĝ ← normalise(∇θ −log σ(logp(safe) − logp(harmful)))      # refreshed every `refresh_every` steps
  δ ← radius · ‖θ‖ · ĝ
  gv ← ∇v L(θ+δ, v=0) − ∇v L(θ, v=0)                         # same dropout RNG for both passes
  v ← probe_step · sign(gv)                                   # one FGSM-style ascent step on L_su
  outer task pass with v added to the probed layers' outputs (forward hooks)

Cost design (measured in bench/train_step.md):
  * The probe passes take gradients w.r.t. v only (`torch.autograd.grad`, trainable params temporarily
    frozen), so autograd records nothing below the lowest probe layer and computes no weight grads.
  * The probe gradient may use a sub-batch (`probe_batch_size`): only sign(gv) is used, so a noisier
    estimate costs little, and both passes see the same examples and dropout masks.
  * `lagged_probe=True` is the reference-code ordering: the outer pass uses the previous step's probe
    and also yields ∇v L(θ, v) for free; only the perturbed pass is extra (1 pass instead of 2).
The sign step (not Adam) is what the reference code's probe AdamW does on its first step from v=0
(§1.3), and it makes the probe scale independent of the radius, which then only sets the finite-
difference scale of L_su.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from sap_core.config import SapConfig
from sap_core.contrastive import ContrastiveTriple
from sap_core.data import IGNORE_INDEX, collate, encode_chat, move_tensor, one_turn, take_cycled, to_device
from sap_core.distributed import current_ranks
from sap_core.modeling import autocast_for, target_logprobs, task_loss

Batch = dict[str, torch.Tensor]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """Find the decoder-layer ModuleList of a (possibly PEFT-wrapped) causal LM.

    Args:
        model: The model.

    Returns:
        The ModuleList whose length equals config.num_hidden_layers.
    """
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.endswith("layers") and (n is None or len(module) == n):
            return module
    raise ValueError("model has no decoder-layer ModuleList named '*layers'")


def default_probe_layers(num_layers: int) -> tuple[int, ...]:
    """Middle third of the decoder (the paper probes the middle band, §1.3).

    Args:
        num_layers: Number of decoder layers.

    Returns:
        0-based layer indices, at least one.
    """
    start = num_layers // 3
    return tuple(range(start, max(start + 1, (2 * num_layers) // 3)))


def response_logprobs(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Sum of log p(token) over labelled tokens per row, with the standard next-token shift.

    Args:
        model: Causal LM.
        batch: Collated batch whose labels mark the response tokens.

    Returns:
        [B] tensor of summed log-probs.
    """
    with autocast_for(model):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp, _ = target_logprobs(logits, batch["labels"])
    return logp.sum(-1)


def mean_response_logprobs(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Per-token mean of log p over labelled tokens per row (`response_logprobs` / label count).

    Length-normalised: a harmful answer is usually far longer than a refusal, so summed log-probs
    give margins of hundreds of nats, where log-sigmoid is flat and its gradient underflows to
    exactly zero in fp32 (no direction at all).
    """
    n_tokens = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(-1).clamp_min(1)
    return response_logprobs(model, batch) / n_tokens


class SapGuard:
    """Stateful SAP helper driven by `finetune` (see module docstring for the algorithm)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        triples: Sequence[ContrastiveTriple],
        config: SapConfig,
        max_seq_len: int,
    ) -> None:
        """Encode the contrastive set and resolve probe layers.

        Args:
            model: PeftModel (or any model whose trainable params are the ones to protect).
            tokenizer: Tokenizer with a chat template.
            triples: Contrastive (prompt, safe, harmful) triples; at least one.
            config: SAP settings.
            max_seq_len: Truncation for contrastive sequences.
        """
        if not triples:
            raise ValueError("contrastive: SAP needs at least one (prompt, safe, harmful) triple")
        self.model = model
        self.config = config
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.ranks = current_ranks()
        self.layers = decoder_layers(model)
        self.probe_layers = config.probe_layers or default_probe_layers(len(self.layers))
        if max(self.probe_layers) >= len(self.layers):
            raise ValueError(f"probe_layers={self.probe_layers}: model has {len(self.layers)} layers")
        self.hidden_size = int(model.config.hidden_size)  # type: ignore[union-attr,arg-type]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pad_id = int(pad)
        self._pairs = [
            (
                encode_chat(tokenizer, one_turn(t.prompt, t.safe), max_seq_len),
                encode_chat(tokenizer, one_turn(t.prompt, t.harmful), max_seq_len),
            )
            for t in triples
        ]
        self.direction: list[torch.Tensor] | None = None
        self.cursor = 0  # position in the cycled contrastive set
        self.steps_since_refresh = 0
        self.probe: list[torch.Tensor] | None = None  # last computed v (used by lagged ordering)
        self._hooks: list[Any] = []
        self._active: list[torch.Tensor] | None = None
        self._outer_rng = _rng_state()

    # ---- harmful direction -------------------------------------------------------------------
    def contrastive_loss(self) -> torch.Tensor:
        """DPO-style loss without reference model on the next contrastive batch (T = 1)."""
        k = min(self.config.contrastive_batch_size, len(self._pairs))
        pairs, self.cursor = take_cycled(self._pairs, self.cursor, k)
        device = self.params[0].device
        # One forward over safe+harmful rows: the margin needs both and this halves the launches.
        both = collate([pair[j] for j in (0, 1) for pair in pairs], self._pad_id)
        batch = to_device(both, device)
        logp = mean_response_logprobs(self.model, batch)
        return -F.logsigmoid(logp[:k] - logp[k:]).mean()

    def refresh_direction(self) -> list[torch.Tensor]:
        """Recompute ĝ = ∇θ L_c / ‖∇θ L_c‖ (global norm over all trainable params)."""
        with _params_requiring_grad(self.params, True):
            loss = self.contrastive_loss()
            grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        flat = [
            torch.zeros_like(p) if g is None else g.detach().float()
            for p, g in zip(self.params, grads, strict=True)
        ]
        # Rescale by the max before squaring: a saturated loss (a safe model already prefers refusals)
        # has gradients ~1e-20 whose squares underflow fp32, which would leave ĝ un-normalised.
        peak = max(float(g.abs().max()) for g in flat)
        if peak == 0.0 or not math.isfinite(peak):
            raise FloatingPointError(f"contrastive gradient max={peak}: cannot form a harmful direction")
        flat = [g / peak for g in flat]
        norm = math.sqrt(sum(float(g.pow(2).sum()) for g in flat))
        self.direction = [g / norm for g in flat]
        self.steps_since_refresh = 0
        return self.direction

    def _maybe_refresh(self) -> list[torch.Tensor]:
        if self.direction is None or self.steps_since_refresh >= self.config.refresh_every:
            self.refresh_direction()
        self.steps_since_refresh += 1
        assert self.direction is not None
        return self.direction

    # ---- probe hooks -------------------------------------------------------------------------
    def _hook(self, slot: int) -> Any:
        def add_probe(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            if self._active is None:
                return output
            h = output[0] if isinstance(output, tuple) else output
            h = h + self._active[slot].to(h.dtype)  # broadcast over batch and positions
            return (h, *output[1:]) if isinstance(output, tuple) else h

        return add_probe

    @contextlib.contextmanager
    def probe_inserted(self, probe: list[torch.Tensor] | None) -> Iterator[None]:
        """Add `probe[i]` to the output of layer `probe_layers[i]` inside the block; remove after.

        Hooks exist only inside this context, so eval and export never see a probe.
        """
        if probe is None:
            yield
            return
        self._active = probe
        self._hooks = [
            self.layers[layer].register_forward_hook(self._hook(slot))
            for slot, layer in enumerate(self.probe_layers)
        ]
        try:
            yield
        finally:
            for h in self._hooks:
                h.remove()
            self._hooks, self._active = [], None

    def has_hooks(self) -> bool:
        """True while a probe hook is registered on any probed layer."""
        return any(len(self.layers[i]._forward_hooks) > 0 for i in self.probe_layers)

    def _zero_probe(self) -> list[torch.Tensor]:
        device = self.params[0].device
        return [torch.zeros(self.hidden_size, device=device, requires_grad=True) for _ in self.probe_layers]

    def _probe_grad(self, batches: Sequence[Batch], probe: list[torch.Tensor]) -> list[torch.Tensor]:
        """∇v of the mean task loss over `batches`, without accumulating any parameter gradient."""
        total = [torch.zeros_like(v) for v in probe]
        with _params_requiring_grad(self.params, False), self.probe_inserted(probe):
            for b in batches:
                loss = task_loss(self.model, b) / len(batches)
                for t, g in zip(total, torch.autograd.grad(loss, probe), strict=True):
                    t.add_(g)
        return total

    @contextlib.contextmanager
    def perturbed(self, direction: Sequence[torch.Tensor]) -> Iterator[float | torch.Tensor]:
        """Temporarily set θ ← θ + radius·‖θ‖·ĝ; θ is restored bit-exactly from a copy on exit."""
        backup = [p.detach().clone() for p in self.params]
        scale = self.config.radius * _global_norm(backup)
        with torch.no_grad():
            for p, d in zip(self.params, direction, strict=True):
                if isinstance(scale, torch.Tensor):
                    p.add_(d.to(p.dtype) * scale.to(p.dtype))
                else:
                    p.add_(d.to(p.dtype), alpha=scale)
        try:
            yield scale
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup, strict=True):
                    p.copy_(b)

    def _sign_step(self, gv: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        # No statistics here: each float() of a GPU tensor is a host sync per step (issue 12 §10).
        return [self.config.probe_step * torch.sign(g) for g in gv]

    def _sub_batches(self, batches: Sequence[Batch]) -> list[Batch]:
        n = self.config.probe_batch_size
        if n is None:
            return list(batches)
        # Under DDP rank r holds global rows r, r+W, ...: its first ceil(n/W) rows, over all ranks,
        # are the first n rows of the global micro-batch that one process would probe on.
        n = math.ceil(n / self.ranks.world_size)
        return [{k: v[:n] for k, v in batches[0].items()}]

    def _probe_difference(
        self, g_pert: Sequence[torch.Tensor], g_clean: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """∇v(perturbed) - ∇v(clean), averaged over the ranks: one probe for the whole global batch."""
        diff = [a - b for a, b in zip(g_pert, g_clean, strict=True)]
        if self.ranks.world_size > 1:
            for d in diff:
                dist.all_reduce(d, op=dist.ReduceOp.SUM)
                d.div_(self.ranks.world_size)
        return diff

    # ---- per-step entry points used by finetune -----------------------------------------------
    def probe_for_step(self, batches: Sequence[Batch]) -> list[torch.Tensor]:
        """Return the probe to insert in this step's outer pass.

        Paper ordering computes it now from this step's batch (2 extra passes); lagged ordering
        returns the probe computed at the end of the previous step (zero at the first step).

        Args:
            batches: This step's micro-batches, already on the model's device.

        Returns:
            One [hidden] tensor per probed layer (requires_grad in lagged mode).
        """
        if self.config.lagged_probe:
            # The perturbed pass in after_backward replays the outer pass's dropout masks.
            self._outer_rng = _rng_state()
            prev = self.probe or [torch.zeros(self.hidden_size) for _ in self.probe_layers]
            device = self.params[0].device
            return [move_tensor(v.detach(), device).requires_grad_(True) for v in prev]
        sub = self._sub_batches(batches)
        zero = self._zero_probe()
        # Same dropout masks in the perturbed and clean passes (defect §1.10.2); fork_rng keeps the
        # outer pass's RNG stream independent of the probe passes.
        with torch.random.fork_rng(devices=_cuda_devices(self.params)):
            direction = self._maybe_refresh()
            state = _rng_state()
            with self.perturbed(direction):
                g_pert = self._probe_grad(sub, zero)
            _set_rng_state(state)
            g_clean = self._probe_grad(sub, zero)
        self.probe = self._sign_step(self._probe_difference(g_pert, g_clean))
        return self.probe

    def after_backward(self, batches: Sequence[Batch], probe: list[torch.Tensor]) -> None:
        """Lagged ordering only: build next step's probe from this step's clean ∇v and one perturbed pass.

        Args:
            batches: This step's micro-batches (the outer pass already ran on them).
            probe: The probe tensors used in the outer pass (their .grad holds ∇v L(θ, v)).
        """
        if not self.config.lagged_probe:
            return
        g_clean = [torch.zeros_like(v) if v.grad is None else v.grad.detach() for v in probe]
        with torch.random.fork_rng(devices=_cuda_devices(self.params)):
            direction = self._maybe_refresh()
            _set_rng_state(self._outer_rng)
            with self.perturbed(direction):
                g_pert = self._probe_grad(batches, [v.detach().requires_grad_(True) for v in probe])
        self.probe = [v.cpu() for v in self._sign_step(self._probe_difference(g_pert, g_clean))]

    # ---- checkpoint state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-identically."""
        return {
            "direction": None if self.direction is None else [d.cpu() for d in self.direction],
            "cursor": self.cursor,
            "steps_since_refresh": self.steps_since_refresh,
            "probe": None if self.probe is None else [v.detach().cpu() for v in self.probe],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`."""
        device = self.params[0].device
        self.direction = None if state["direction"] is None else [d.to(device) for d in state["direction"]]
        self.cursor = int(state["cursor"])
        self.steps_since_refresh = int(state["steps_since_refresh"])
        self.probe = None if state["probe"] is None else [v.to(device) for v in state["probe"]]


def _global_norm(tensors: Sequence[torch.Tensor]) -> float | torch.Tensor:
    """sqrt(sum of squares) over all tensors: a float on the CPU, a device scalar on CUDA.

    The CPU keeps its exact double-precision sum (free there); on CUDA a float() per step would
    make the host wait for the GPU, so the norm stays a tensor that the next kernels consume.
    """
    if tensors and tensors[0].device.type == "cuda":
        return torch.stack([t.float().pow(2).sum() for t in tensors]).sum().sqrt()
    return math.sqrt(sum(float(t.float().pow(2).sum()) for t in tensors))


@contextlib.contextmanager
def _params_requiring_grad(params: Sequence[torch.Tensor], flag: bool) -> Iterator[None]:
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(flag)
    try:
        yield
    finally:
        for p, b in zip(params, before, strict=True):
            p.requires_grad_(b)


def _cuda_devices(params: Sequence[torch.Tensor]) -> list[int]:
    return sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])
