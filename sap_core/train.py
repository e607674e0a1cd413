"""The training loop: one visible loop, extended by callbacks (STYLE rule 20).

Per optimizer step, with the job's guards (`sap_core.step_guard.StepGuard`, composed in order):
  guard step contexts (SAP: probe computed from this step's batch and inserted)
  → forward → loss (a guard may replace cross-entropy: constrained) → backward over grad_accum
  micro-batches → guards after-backward (SAP lagged probe; anchor gradient + surgery) → clip
  → AdamW step → LR schedule → guards after-step (EMA update)
  → validation / checkpoint → callbacks ("stop" ends the loop after this step).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from torch import nn
from transformers import PreTrainedTokenizerBase

from sap_core.acceleration import enable_gradient_checkpointing, wants_gradient_checkpointing
from sap_core.anchor import AnchorExample, AnchorGuard, build_anchor_set
from sap_core.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from sap_core.config import TrainConfig, guard_parts
from sap_core.constrained import ConstrainedGuard
from sap_core.contrastive import ContrastiveTriple, default_contrastive_triples
from sap_core.data import (
    IGNORE_INDEX,
    EncodedExample,
    Message,
    collate,
    encode_chat,
    length_grouped_batches,
    target_count,
    to_device,
)
from sap_core.distributed import (
    Ranks,
    average_gradients,
    broadcast_parameters,
    broadcast_stop,
    current_ranks,
    sum_across_ranks,
)
from sap_core.guard import SapGuard
from sap_core.modeling import task_loss
from sap_core.step_guard import EmaGuard, SapStepGuard, StepGuard

Conversation = Sequence[Message]


class StepState:
    """Progress snapshot passed to callbacks.

    `loss` and `tokens_per_second` are read from the device when a callback first asks for them,
    so a loop whose callbacks log every N steps synchronises with the GPU every N steps, not every
    micro-batch. `tokens_per_second` covers the steps since the previous read (validation and
    checkpoint time excluded).
    """

    def __init__(
        self,
        step: int,
        total_steps: int,
        epoch: int,
        loss: float | torch.Tensor,
        learning_rate: float,
        tokens_per_second: float | Callable[[], float],
        elapsed_seconds: float,
        val_loss: float | None = None,
    ) -> None:
        self.step = step
        self.total_steps = total_steps
        self.epoch = epoch
        self._loss = loss
        self.learning_rate = learning_rate
        self._rate = tokens_per_second
        self.elapsed_seconds = elapsed_seconds
        self.val_loss = val_loss

    @property
    def loss(self) -> float:
        """Token-weighted mean training loss of this step (over every rank)."""
        if isinstance(self._loss, torch.Tensor):
            self._loss = float(self._loss)
        return self._loss

    @property
    def tokens_per_second(self) -> float:
        """Attended tokens per second (over every rank) since the previous read."""
        if callable(self._rate):
            self._rate = self._rate()
        return self._rate

    def __repr__(self) -> str:
        return f"StepState(step={self.step}, total_steps={self.total_steps}, loss={self._loss!r})"


class _Throughput:
    """Tokens per second over the window since the last read, measured after a device sync."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mark = time.perf_counter()
        self.tokens = 0
        self.excluded = 0.0
        self.rate = 0.0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def exclude(self, seconds: float) -> None:
        """Time spent outside training steps (validation, checkpoints) inside the window."""
        self.excluded += seconds

    def read(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the queued steps' kernels are what we time
        now = time.perf_counter()
        if self.tokens:
            self.rate = self.tokens / max(now - self.mark - self.excluded, 1e-9)
        self.mark, self.tokens, self.excluded = now, 0, 0.0
        return self.rate


class TrainingCallback:
    """Subclass and override any hook; returning "stop" from on_step_end ends training after the step."""

    def on_step_end(self, state: StepState) -> str | None:
        """Called after every optimizer step."""
        return None

    def on_evaluate(self, state: StepState, val_loss: float) -> None:
        """Called after each validation pass, with the weights that were validated in place."""

    def on_checkpoint(self, state: StepState, checkpoint_dir: Path) -> None:
        """Called after a checkpoint folder is complete on disk."""


@dataclass
class TrainResult:
    """Outcome of `finetune`."""

    steps_done: int
    stopped: bool
    final_loss: float
    val_losses: dict[int, float] = field(default_factory=dict)
    best_step: int | None = None
    losses: list[float] = field(default_factory=list)
    guard_settings: dict[str, dict[str, Any]] = field(default_factory=dict)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """LR multiplier at `step` (0-based): linear warm-up, then cosine / linear decay or constant.

    Args:
        step: Optimizer steps already taken.
        total: Total optimizer steps.
        warmup: Warm-up steps.
        schedule: "cosine" | "linear" | "constant".

    Returns:
        Multiplier in [0, 1].
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _n_targets(batch: dict[str, torch.Tensor]) -> int:
    # Tokens that contribute to HF's shifted loss: labels from position 1 on (a CPU batch: no sync).
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def _encode_all(
    tokenizer: PreTrainedTokenizerBase, convs: Sequence[Conversation], max_seq_len: int
) -> list[EncodedExample]:
    return [encode_chat(tokenizer, c, max_seq_len) for c in convs]


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad)


@torch.no_grad()
def evaluation_loss(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Conversation],
    max_seq_len: int,
    batch_size: int,
) -> float:
    """Mean next-token loss over assistant tokens (token-weighted across batches).

    Args:
        model: Causal LM (eval mode is used; the previous mode is restored).
        tokenizer: Tokenizer with a chat template.
        examples: Conversations.
        max_seq_len: Truncation length.
        batch_size: Examples per forward.

    Returns:
        The mean loss, or NaN when there are no labelled tokens.
    """
    encoded = _encode_all(tokenizer, examples, max_seq_len)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, len(encoded), batch_size):
            cpu_batch = collate(encoded[i : i + batch_size], _pad_id(tokenizer))
            n = _n_targets(cpu_batch)
            if n:
                batch = to_device(cpu_batch, device)
                total += float(task_loss(model, batch)) * n
                count += n
    finally:
        model.train(was_training)
    return total / count if count else float("nan")


def finetune(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    train: Sequence[Conversation],
    config: TrainConfig,
    *,
    val: Sequence[Conversation] | None = None,
    contrastive: Sequence[ContrastiveTriple] | None = None,
    anchor_set: Sequence[AnchorExample] | None = None,
    callbacks: Sequence[TrainingCallback] = (),
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
) -> TrainResult:
    """Fine-tune the trainable (LoRA) weights of `model` with an optional SAP or EMA guard.

    Args:
        model: PeftModel on its target device; only `requires_grad` params are trained.
        tokenizer: Tokenizer with a chat template.
        train: Training conversations.
        config: Hyperparameters and guard settings.
        val: Validation conversations; loss every `eval_every` steps and at the end.
        contrastive: SAP triples; None loads `default_contrastive_triples()` when guard="sap".
        anchor_set: The base's own anchor answers (`anchor.build_anchor_set`, cached by the caller);
            None generates them here when the guard includes "anchor".
        callbacks: Progress / cancellation hooks.
        checkpoint_dir: Where step-N checkpoints go when `checkpoint_every` > 0.
        resume_from: A step-N checkpoint; continuing gives the same result as never stopping.

    Returns:
        TrainResult. With guard="ema" the model holds the EMA weights on return (what gets exported).
    """
    parts = guard_parts(config.guard)
    if not train:
        raise ValueError("train: need at least one example")
    if config.checkpoint_every and checkpoint_dir is None:
        raise ValueError("checkpoint_dir=None: required when checkpoint_every > 0")
    device = next(model.parameters()).device
    pad_id = _pad_id(tokenizer)
    # Truncation can cut off every assistant token; such rows would make the loss 0/0 = NaN.
    examples = [e for e in _encode_all(tokenizer, train, config.max_seq_len) if target_count(e)]
    if not examples:
        raise ValueError(
            f"train: no example keeps an assistant token within max_seq_len={config.max_seq_len}"
        )
    # Counted on the host once: per-step token counts then cost no device read.
    targets = [target_count(e) for e in examples]
    lengths = [len(e) for e in examples]
    n_micro = math.ceil(len(examples) / config.batch_size)
    steps_per_epoch = math.ceil(n_micro / config.grad_accum)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    warmup = math.ceil(config.warmup_ratio * total_steps)
    ranks = current_ranks()

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters; call attach_lora first")
    if ranks.world_size > 1:
        broadcast_parameters(params)
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, config.lr_schedule)
    )
    guards = _build_guards(parts, model, tokenizer, config, examples, contrastive, anchor_set, pad_id)
    loss_guards = [g for g in guards if g.replaces_loss]
    if len(loss_guards) > 1:
        raise ValueError(f"guard={config.guard!r}: at most one part may replace the training loss")
    loss_guard = loss_guards[0] if loss_guards else None
    if wants_gradient_checkpointing(model, config):
        enable_gradient_checkpointing(model)

    start_step, val_losses = 0, {}
    losses: list[float | torch.Tensor] = []
    if resume_from is not None:
        state = load_checkpoint(resume_from, model)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        for guard, guard_state in zip(guards, state["guards"], strict=True):
            guard.load_state_dict(guard_state)
        start_step, val_losses, losses = state["step"], dict(state["val_losses"]), list(state["losses"])
        set_rng_state(state["rng"])

    order_cache: dict[int, list[list[int]]] = {}

    def micro_batches(step: int) -> list[_MicroBatch]:
        # Data position is a pure function of (seed, step): resume needs nothing but the step count.
        epoch, k = divmod(step, steps_per_epoch)
        if epoch not in order_cache:
            order_cache.clear()
            order_cache[epoch] = length_grouped_batches(lengths, config.batch_size, config.seed, epoch)
        return [
            _MicroBatch.build(idx, examples, targets, pad_id, device, ranks)
            for idx in order_cache[epoch][k * config.grad_accum : (k + 1) * config.grad_accum]
        ]

    model.train()
    started = time.perf_counter()
    meter = _Throughput(device)
    stopped, step = False, start_step
    loss_value: float | torch.Tensor = float("nan")
    for step in range(start_step + 1, total_steps + 1):
        chosen = micro_batches(step - 1)
        batches = [m.batch for m in chosen]
        # The step's objective is the token-weighted mean over the global batch; each rank weighs its
        # rows by world_size so that the averaged gradient is exactly that mean.
        n_tokens = max(1, sum(m.global_targets for m in chosen))
        loss_sum: torch.Tensor | None = None
        with contextlib.ExitStack() as stack:
            for guard in guards:
                stack.enter_context(guard.step_context(batches))
            for m in chosen:
                share = m.targets / n_tokens * ranks.world_size
                replaced = loss_guard.micro_batch_loss(m.batch, m.ids) if loss_guard is not None else None
                if replaced is None:
                    loss = task_loss(model, m.batch) * share
                    reported = loss.detach()
                else:
                    loss, reported = replaced[0] * share, replaced[1] * share
                loss.backward()
                # Accumulated on the device: reading it back per micro-batch would stall the GPU queue.
                loss_sum = reported if loss_sum is None else loss_sum + reported
        for guard in guards:
            guard.after_backward(batches)
        if ranks.world_size > 1:
            average_gradients(params, ranks.world_size)
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        for guard in guards:
            guard.after_optimizer_step()

        assert loss_sum is not None
        if ranks.world_size > 1:
            loss_sum = sum_across_ranks(loss_sum / ranks.world_size)
        loss_value = loss_sum
        losses.append(loss_value)
        meter.add(sum(m.attended for m in chosen))
        state_ = StepState(
            step=step,
            total_steps=total_steps,
            epoch=(step - 1) // steps_per_epoch,
            loss=loss_value,
            learning_rate=lr,
            tokens_per_second=meter.read,
            elapsed_seconds=time.perf_counter() - started,
        )
        stop = False
        if ranks.is_main:
            paused = time.perf_counter()
            if val and config.eval_every and step % config.eval_every == 0:
                _validate(model, tokenizer, val, config, guards, state_, val_losses, callbacks)
            if config.checkpoint_every and step % config.checkpoint_every == 0 and checkpoint_dir is not None:
                trainer_state = {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng_state(),
                    "guards": [guard.state_dict() for guard in guards],
                    "val_losses": val_losses,
                    "losses": _floats(losses),
                    "config": config.to_dict(),
                }
                path = save_checkpoint(checkpoint_dir, step, model, trainer_state)
                for cb in callbacks:
                    cb.on_checkpoint(state_, path)
            meter.exclude(time.perf_counter() - paused)
            stop = any([cb.on_step_end(state_) == "stop" for cb in callbacks])  # every callback sees it
        if ranks.world_size > 1:
            stop = broadcast_stop(stop, device)
        if stop:
            stopped = True
            break

    done = step if step > start_step else start_step
    final_loss = float(loss_value)
    if val and done not in val_losses and not stopped and ranks.is_main:
        final_state = StepState(
            done,
            total_steps,
            (done - 1) // steps_per_epoch,
            final_loss,
            0.0,
            0.0,
            time.perf_counter() - started,
        )
        _validate(model, tokenizer, val, config, guards, final_state, val_losses, callbacks)
    for guard in guards:
        guard.finish()
    model.eval()
    best = min(val_losses, key=lambda s: val_losses[s]) if val_losses else None
    settings = {guard.name: guard.settings() for guard in guards}
    return TrainResult(done, stopped, final_loss, val_losses, best, _floats(losses), settings)


def _floats(values: Sequence[float | torch.Tensor]) -> list[float]:
    # One device read per value, done at a checkpoint or at the end, never inside a step.
    return [float(v) for v in values]


@dataclass
class _MicroBatch:
    """One micro-batch as this rank trains it: the rows, on the device, and their host-side counts."""

    batch: dict[str, torch.Tensor]
    ids: list[int]
    targets: int  # this rank's labelled tokens (0 for a rank's placeholder row)
    global_targets: int  # every rank's: the weight denominator
    attended: int  # tokens that went through attention, over every rank

    @classmethod
    def build(
        cls,
        global_ids: list[int],
        examples: Sequence[EncodedExample],
        targets: Sequence[int],
        pad_id: int,
        device: torch.device,
        ranks: Ranks,
    ) -> _MicroBatch:
        ids, real = ranks.shard(global_ids)
        cpu = collate([examples[i] for i in ids], pad_id)
        return cls(
            batch=to_device(cpu, device),
            ids=ids,
            targets=sum(targets[i] for i in ids) if real else 0,
            global_targets=sum(targets[i] for i in global_ids),
            attended=sum(len(examples[i]) for i in global_ids),
        )


def _build_guards(
    parts: Sequence[str],
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    config: TrainConfig,
    examples: Sequence[EncodedExample],
    contrastive: Sequence[ContrastiveTriple] | None,
    anchor_set: Sequence[AnchorExample] | None,
    pad_id: int,
) -> list[StepGuard]:
    guards: list[StepGuard] = []
    for name in parts:
        if name == "ema":
            guards.append(EmaGuard(model, config.ema.decay))
        elif name == "sap":
            triples = list(contrastive) if contrastive is not None else default_contrastive_triples()
            guards.append(SapStepGuard(SapGuard(model, tokenizer, triples, config.sap, config.max_seq_len)))
        elif name == "anchor":
            anchors = (
                list(anchor_set)
                if anchor_set is not None
                else build_anchor_set(model, tokenizer, config.anchor)
            )
            guards.append(AnchorGuard(model, tokenizer, anchors, config.anchor, config.max_seq_len))
        elif name == "constrained":
            guards.append(ConstrainedGuard(model, examples, config.constrained, pad_id, config.batch_size))
    return guards


def _validate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    val: Sequence[Conversation],
    config: TrainConfig,
    guards: Sequence[StepGuard],
    state: StepState,
    val_losses: dict[int, float],
    callbacks: Sequence[TrainingCallback],
) -> None:
    # With EMA the deployed weights are the shadows, so that is what validation measures.
    with contextlib.ExitStack() as stack:
        for guard in guards:
            stack.enter_context(guard.eval_context())
        loss = evaluation_loss(model, tokenizer, val, config.max_seq_len, config.batch_size)
        val_losses[state.step] = loss
        state.val_loss = loss
        for cb in callbacks:  # inside the context: a callback sees the deployed (e.g. EMA) weights
            cb.on_evaluate(state, loss)
