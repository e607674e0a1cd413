"""Batched greedy generation for safety evaluation (chat-templated, left-padded)."""

from __future__ import annotations

from typing import Any

import torch


def _render(tokenizer: Any, prompt: str, system: str | None) -> str:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int = 64,
    batch_size: int = 8,
    *,
    system: str | None = None,
) -> list[str]:
    """Answer each prompt greedily and return only the newly generated text.

    Works on a plain ``PreTrainedModel`` and on a ``PeftModel`` (both expose ``generate``).
    Greedy decoding makes base-vs-tuned comparisons deterministic, so a change in a verdict is
    caused by the weights, not by sampling noise.

    Args:
        model: causal LM (optionally wrapped by peft).
        tokenizer: its tokenizer; must have a chat template.
        prompts: user messages, one per conversation.
        max_new_tokens: generation budget per prompt.
        batch_size: prompts per forward batch.
        system: optional system message prepended to every conversation.

    Returns:
        One decoded string per prompt (special tokens stripped, whitespace trimmed).
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    was_training = model.training
    model.eval()
    old_side = tokenizer.padding_side
    # Left padding keeps every prompt's last token adjacent to the first generated token.
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [_render(tokenizer, p, system) for p in prompts[start : start + batch_size]]
            # The chat template already contains the special tokens (BOS/<|im_start|>).
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            outputs += [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return outputs
