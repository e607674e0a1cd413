"""`anchor`: a self-distilled refusal anchor with gradient surgery (guards.md §1.2 SafeGrad, §7.1).

Before training, the base model (adapter disabled) answers a small set of harmful prompts that no
evaluation or selection set contains, plus benign requests (formatted tasks and short everyday
ones); its own refusals (and its own benign answers) are the anchor set, cached per base model. On
every anchored step (an anchor batch holds ``benign_per_batch`` benign requests, the rest harmful
prompts, each kind cycled on its own):

  g_task   = the accumulated task gradient
  g_anchor = grad of KL(base || tuned) on an anchor batch (or CE on the base's answers)
  if projection and g_task . g_anchor < 0:  g_task -= (g_task . g_anchor / |g_anchor|^2) g_anchor
  step on g_task + weight * g_anchor

The anchor acts only on the harmful-prompt distribution, so it does not restrain what the task
teaches elsewhere (unlike EMA). `projection=False` is the plain replay baseline any fancier guard
has to beat (guards.md §2, reviewer R4).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from sap_core.config import AnchorConfig
from sap_core.data import IGNORE_INDEX, EncodedExample, collate, encode_chat, one_turn, take_cycled, to_device
from sap_core.generate import generate
from sap_core.judges import is_refusal
from sap_core.modeling import autocast_for, base_model_context, task_loss
from sap_core.prompt_sets import anchor_prompts
from sap_core.step_guard import Batch, StepGuard

# Bump when the way anchor answers are produced changes: old caches then miss.
ANCHOR_SET_VERSION = "1"
# Anchor sets shipped with the package (scripts/ship_anchor_set.py writes them), under the same
# content key as a cache entry: a job on the bundled safe model skips generating its anchor answers,
# and any change to the weights, prompts, answer length or template misses and generates as before.
SHIPPED_ANCHOR_DIR = Path(__file__).parent / "resources" / "anchor_sets"


@dataclass(frozen=True)
class AnchorExample:
    """One anchor conversation: a prompt and the base model's own answer to it."""

    prompt: str
    response: str
    harmful: bool


def anchor_cache_key(config: AnchorConfig, tokenizer: PreTrainedTokenizerBase, model_id: str) -> str:
    """Key of an anchor set: the model, the prompts, the answer length and the chat template."""
    harmful, benign = anchor_prompts(config.n_harmful, config.n_benign)
    payload = {
        "version": ANCHOR_SET_VERSION,
        "model": model_id,
        "harmful": harmful,
        "benign": benign,
        "max_new_tokens": config.max_new_tokens,
        "template": str(getattr(tokenizer, "chat_template", "") or ""),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:24]


def anchor_set_filename(config: AnchorConfig, tokenizer: PreTrainedTokenizerBase, model_id: str) -> str:
    """File name of an anchor set, in a cache folder or the shipped one: ``anchor-<key>.json``."""
    return f"anchor-{anchor_cache_key(config, tokenizer, model_id)}.json"


def build_anchor_set(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    config: AnchorConfig,
    *,
    cache_dir: Path | None = None,
    model_id: str = "",
    batch_size: int = 16,
    refusal_test: Callable[[str], bool] = is_refusal,
    shipped_dir: Path | None = SHIPPED_ANCHOR_DIR,
) -> list[AnchorExample]:
    """The base model's own answers to the anchor prompts, generated once and cached.

    Harmful prompts the base does not refuse are dropped (anchoring to compliance would teach it),
    and so are benign prompts it refuses (anchoring to over-refusal).

    Args:
        model: The model to be tuned; with a PeftModel the adapter is disabled while answering.
        tokenizer: Its tokenizer.
        config: Anchor settings (prompt counts, answer length).
        cache_dir: Folder for ``anchor-<key>.json``; None = no cache.
        model_id: Identifies the base weights in the cache key (name plus revision).
        batch_size: Generation batch size.
        refusal_test: Decides whether an answer is a refusal (the keyword judge by default).
        shipped_dir: Read-only folder of shipped sets, read when the cache misses; None = none.

    Returns:
        The anchor examples, harmful ones first; empty when the base refuses none of the harmful
        anchor prompts (an unaligned base has no refusal behaviour to preserve).
    """
    name = anchor_set_filename(config, tokenizer, model_id)
    cache_file = None if cache_dir is None else Path(cache_dir) / name
    for stored in (cache_file, None if shipped_dir is None else Path(shipped_dir) / name):
        if stored is not None and stored.is_file():
            return [AnchorExample(**row) for row in json.loads(stored.read_text(encoding="utf-8"))]
    harmful, benign = anchor_prompts(config.n_harmful, config.n_benign)
    with base_model_context(model):
        answers = generate(model, tokenizer, harmful + benign, config.max_new_tokens, batch_size)
    examples = [
        AnchorExample(p, a, True)
        for p, a in zip(harmful, answers[: len(harmful)], strict=True)
        if refusal_test(a)
    ]
    if examples:
        examples += [
            AnchorExample(p, a, False)
            for p, a in zip(benign, answers[len(harmful) :], strict=True)
            if a and not refusal_test(a)
        ]
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(e) for e in examples], indent=0), encoding="utf-8")
        tmp.replace(cache_file)
    return examples


def gradient_surgery(
    g_task: Sequence[torch.Tensor], g_anchor: Sequence[torch.Tensor], weight: float, projection: bool
) -> tuple[list[torch.Tensor], bool | torch.Tensor]:
    """Combine the task and anchor gradients (one global dot product over all trainable tensors).

    Args:
        g_task: Task gradient per parameter.
        g_anchor: Anchor gradient per parameter.
        weight: rho, the anchor gradient's weight in the step.
        projection: Remove g_task's component along g_anchor when the two conflict (dot < 0).

    Returns:
        (combined gradient, whether a projection was applied). On CUDA the flag is a device bool
        tensor: the same arithmetic runs without reading the dot product back every step.
    """
    if g_task and g_task[0].device.type == "cuda":
        return gradient_surgery_on_device(g_task, g_anchor, weight, projection)
    dot = sum(float((a.float() * b.float()).sum()) for a, b in zip(g_task, g_anchor, strict=True))
    projected = projection and dot < 0
    task = list(g_task)
    if projected:
        norm_sq = sum(float(b.float().pow(2).sum()) for b in g_anchor)
        if norm_sq > 0:
            coef = dot / norm_sq
            task = [a - coef * b for a, b in zip(g_task, g_anchor, strict=True)]
        else:
            projected = False
    return [a + weight * b for a, b in zip(task, g_anchor, strict=True)], projected


def gradient_surgery_on_device(
    g_task: Sequence[torch.Tensor], g_anchor: Sequence[torch.Tensor], weight: float, projection: bool
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """`gradient_surgery` with the conflict test as a `torch.where`, so nothing leaves the device.

    Args:
        g_task: Task gradient per parameter.
        g_anchor: Anchor gradient per parameter.
        weight: rho, the anchor gradient's weight in the step.
        projection: Remove g_task's component along g_anchor when the two conflict.

    Returns:
        (combined gradient, 0-dim bool tensor: whether a projection was applied).
    """
    dot = torch.stack([(a.float() * b.float()).sum() for a, b in zip(g_task, g_anchor, strict=True)]).sum()
    norm_sq = torch.stack([b.float().pow(2).sum() for b in g_anchor]).sum()
    projected = (dot < 0) & (norm_sq > 0) & projection
    coef = torch.where(projected, dot / torch.where(norm_sq > 0, norm_sq, 1.0), 0.0)
    task = [a - coef.to(a.dtype) * b for a, b in zip(g_task, g_anchor, strict=True)]
    return [a + weight * b for a, b in zip(task, g_anchor, strict=True)], projected


def kl_to_base(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean over labelled positions of KL(base || model), the base being the adapter-disabled model."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad(), base_model_context(model), autocast_for(model):
        ref = torch.log_softmax(model(**inputs).logits[:, :-1].float(), dim=-1)
    with autocast_for(model):
        logp = torch.log_softmax(model(**inputs).logits[:, :-1].float(), dim=-1)
    mask = batch["labels"][:, 1:] != IGNORE_INDEX
    per_pos = (ref.exp() * (ref - logp)).sum(-1)
    return (per_pos * mask).sum() / mask.sum().clamp_min(1)


class AnchorGuard(StepGuard):
    """Adds the anchor gradient (with optional surgery) after each anchored step's task backward."""

    name = "anchor"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        examples: Sequence[AnchorExample],
        config: AnchorConfig,
        max_seq_len: int,
    ) -> None:
        self.model = model
        self.config = config
        self.params = [p for p in model.parameters() if p.requires_grad]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pad_id = int(pad)
        encoded = [encode_chat(tokenizer, one_turn(e.prompt, e.response), max_seq_len) for e in examples]
        kept = [
            (e, ex.harmful)
            for e, ex in zip(encoded, examples, strict=True)
            if any(x != IGNORE_INDEX for x in e.labels[1:])
        ]
        # Two pools cycled side by side: a batch mixes both kinds, whatever the pools' sizes.
        self._harmful: list[EncodedExample] = [e for e, h in kept if h]
        self._benign: list[EncodedExample] = [e for e, h in kept if not h]
        self.n_harmful = sum(e.harmful for e in examples)
        # The default guard must not fail a job on an unaligned base: with no refusal to keep, the
        # anchor stands aside (plain SFT) and the report says so.
        self.inactive_reason = (
            "the base refuses none of the anchor prompts: no refusal behaviour to preserve"
            if not self.n_harmful
            else None
        )
        if self.inactive_reason is None and not self._harmful:
            raise ValueError("anchor: no harmful anchor example keeps a response token within max_seq_len")
        self.harmful_cursor = 0
        self.benign_cursor = 0
        self.steps = 0
        self.anchored_steps = 0
        self.projected_steps: int | torch.Tensor = 0

    def _next_batch(self) -> Batch:
        n_benign = min(self.config.benign_count(), len(self._benign))
        n_harmful = min(self.config.batch_size - n_benign, len(self._harmful))
        harmful, self.harmful_cursor = take_cycled(self._harmful, self.harmful_cursor, n_harmful)
        benign, self.benign_cursor = take_cycled(self._benign, self.benign_cursor, n_benign)
        device = self.params[0].device
        return to_device(collate(harmful + benign, self._pad_id), device)

    def anchor_loss(self, batch: Batch) -> torch.Tensor:
        """The anchor objective on one anchor batch."""
        if self.config.loss == "ce":
            return task_loss(self.model, batch)
        return kl_to_base(self.model, batch)

    def after_backward(self, batches: Sequence[Batch]) -> None:
        self.steps += 1
        if self.inactive_reason is not None or (self.steps - 1) % self.config.every:
            return
        g_task = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in self.params]
        for p in self.params:
            p.grad = None
        self.anchor_loss(self._next_batch()).backward()
        g_anchor = [torch.zeros_like(p) if p.grad is None else p.grad.detach() for p in self.params]
        combined, projected = gradient_surgery(g_task, g_anchor, self.config.weight, self.config.projection)
        for p, g in zip(self.params, combined, strict=True):
            p.grad = g
        self.anchored_steps += 1
        self.projected_steps += projected  # a device tensor on CUDA: read at a checkpoint / the end

    def settings(self) -> dict[str, Any]:
        return {
            "anchor_examples": len(self._harmful) + len(self._benign),
            "anchor_benign": len(self._benign),
            "anchor_harmful": self.n_harmful,
            "anchored_steps": self.anchored_steps,
            "projected_steps": int(self.projected_steps),
            **({"inactive": self.inactive_reason} if self.inactive_reason else {}),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "harmful_cursor": self.harmful_cursor,
            "benign_cursor": self.benign_cursor,
            "steps": self.steps,
            "anchored_steps": self.anchored_steps,
            "projected_steps": int(self.projected_steps),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # A checkpoint written before the pools were split has one cursor over harmful-then-benign.
        legacy = state.get("cursor", 0)
        self.harmful_cursor = int(state.get("harmful_cursor", legacy)) % max(1, len(self._harmful))
        self.benign_cursor = int(state.get("benign_cursor", 0))
        self.steps = int(state["steps"])
        self.anchored_steps = int(state["anchored_steps"])
        self.projected_steps = int(state["projected_steps"])
