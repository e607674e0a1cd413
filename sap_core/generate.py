"""Batched greedy generation for safety evaluation: chat-templated, left-padded, KV-cached.

Why our own loop rather than `model.generate`: a finished row (EOS, or an answer whose verdict can
no longer change, see `stop_when`) is dropped from the batch and from the KV cache, so the batch
shrinks as answers end instead of decoding padding until its longest answer is done. Prompts are
sorted by length so a batch pads little; results come back in the caller's order. The prompt pass
asks the model for the last position's logits only (a vocabulary-wide projection of every prompt
token is most of a CPU prefill's cost), and a batch that runs out of accelerator memory is split in
half and retried, so `batch_size` can be set to what is fastest rather than what is safe.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from transformers import DynamicCache

# How often (in generated tokens) `stop_when` is asked about the rows still running.
STOP_CHECK_EVERY = 4


def render_prompt(tokenizer: Any, prompt: str, system: str | None) -> str:
    """The chat-templated conversation up to the assistant's turn (shared with the vLLM engine)."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int = 64,
    batch_size: int = 8,
    *,
    system: str | None = None,
    stop_when: Callable[[str], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Answer each prompt greedily and return only the newly generated text.

    Greedy decoding makes base-vs-tuned comparisons deterministic, so a change in a verdict is
    caused by the weights, not by sampling noise.

    Args:
        model: causal LM (optionally wrapped by peft).
        tokenizer: its tokenizer; must have a chat template.
        prompts: user messages, one per conversation.
        max_new_tokens: generation budget per prompt.
        batch_size: prompts per forward batch.
        system: optional system message prepended to every conversation.
        stop_when: optional test on a row's text so far; True ends that row early. It must only
            return True when generating more could not change what the caller decides from the text
            (e.g. a settled refusal).
        progress: optional callback(prompts done, total) after each batch.

    Returns:
        One decoded string per prompt (special tokens stripped, whitespace trimmed).
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    was_training = model.training
    model.eval()
    texts = [render_prompt(tokenizer, p, system) for p in prompts]
    # The chat template already contains the special tokens (BOS/<|im_start|>).
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    outputs: list[str] = [""] * len(prompts)
    last_only = _accepts_logits_to_keep(model)
    try:
        done = 0
        while done < len(order):
            chunk = order[done : done + batch_size]
            try:
                answers = _greedy_batch(
                    model, tokenizer, [ids[i] for i in chunk], max_new_tokens, stop_when, last_only
                )
            except torch.OutOfMemoryError:
                if batch_size == 1:
                    raise
                batch_size = max(1, batch_size // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            for i, text in zip(chunk, answers, strict=True):
                outputs[i] = text
            done += len(chunk)
            if progress is not None:
                progress(done, len(order))
    finally:
        model.train(was_training)
    return outputs


@torch.inference_mode()
def _greedy_batch(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    stop_when: Callable[[str], bool] | None,
    last_only: bool = False,
) -> list[str]:
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop_ids = eos_ids(tokenizer, model)
    width = max(len(p) for p in prompt_ids)
    # Left padding keeps every prompt's last token adjacent to its first generated token.
    input_ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for row, p in enumerate(prompt_ids):
        input_ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    cache = DynamicCache()
    alive = list(range(len(prompt_ids)))  # original row of each row still in the batch
    generated: list[list[int]] = [[] for _ in prompt_ids]
    extra = {"logits_to_keep": 1} if last_only else {}
    logits = model(
        input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache, **extra
    ).logits
    next_pos = positions[:, -1:] + 1
    for step in range(max_new_tokens):
        tokens = logits[:, -1].argmax(-1)
        keep: list[int] = []
        for j, row in enumerate(alive):
            tok = int(tokens[j])
            if tok in stop_ids:
                continue
            generated[row].append(tok)
            done = step + 1 == max_new_tokens
            if not done and stop_when is not None and (step + 1) % STOP_CHECK_EVERY == 0:
                done = stop_when(tokenizer.decode(generated[row], skip_special_tokens=True))
            if not done:
                keep.append(j)
        if not keep:
            break
        if len(keep) < len(alive):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            tokens, mask, next_pos = tokens[index], mask[index], next_pos[index]
            alive = [alive[j] for j in keep]
        mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=-1)
        logits = model(
            input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos, cache=cache
        ).logits
        next_pos = next_pos + 1
    return [tokenizer.decode(g, skip_special_tokens=True).strip() for g in generated]


def _accepts_logits_to_keep(model: Any) -> bool:
    """Whether the causal LM under any peft wrapper takes `logits_to_keep` (transformers' LMs do)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def eos_ids(tokenizer: Any, model: Any) -> set[int]:
    """Token ids that end an answer: the tokenizer's EOS and the model's generation_config EOS."""
    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, list | tuple):
        ids.update(int(x) for x in configured)
    return ids
