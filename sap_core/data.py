"""Chat tokenisation with assistant-only labels, length-grouped batching and right-padded collation."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from transformers import PreTrainedTokenizerBase

from sap_core.contrastive import ContrastiveTriple, default_contrastive_triples, load_contrastive_jsonl

__all__ = [
    "IGNORE_INDEX",
    "ContrastiveTriple",
    "EncodedExample",
    "Message",
    "collate",
    "one_turn",
    "default_contrastive_triples",
    "encode_chat",
    "length_grouped_batches",
    "load_contrastive_jsonl",
]

IGNORE_INDEX = -100  # the ignore_index of HF's cross-entropy
Message = dict[str, str]


@dataclass(frozen=True)
class EncodedExample:
    """One tokenised conversation.

    `labels` is aligned with `input_ids` (NOT pre-shifted): HF's causal-LM loss shifts internally, so
    labels[t] is the target that logits[t-1] is scored against.
    """

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.input_ids)


def _render(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], gen_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=gen_prompt)
    # The template already writes every special token; add_special_tokens=False avoids a second BOS.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def one_turn(prompt: str, response: str) -> list[Message]:
    """A user prompt and the assistant's answer, as a conversation."""
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def encode_chat(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], max_seq_len: int
) -> EncodedExample:
    """Tokenise a conversation with the chat template; only assistant tokens get labels.

    Each assistant turn's labelled span is its content plus the closing eos token (so the model learns
    to stop), found by rendering the conversation prefix with a generation prompt. Everything else
    (system, user, role headers, the newline after eos) is IGNORE_INDEX.

    Args:
        tokenizer: Tokenizer with a chat template.
        messages: [{"role": "system"|"user"|"assistant", "content": str}, ...].
        max_seq_len: Truncate (from the right) to this many tokens.

    Returns:
        The EncodedExample.

    Raises:
        ValueError: On an unknown role, no assistant turn, or a template that is not prefix-consistent.
    """
    if not any(m.get("role") == "assistant" for m in messages):
        raise ValueError("messages: need at least one assistant turn to train on")
    full = _render(tokenizer, messages, gen_prompt=False)
    labels = [IGNORE_INDEX] * len(full)
    eos = tokenizer.eos_token_id
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"messages[{i}].role={role!r}: must be system, user or assistant")
        if role != "assistant":
            continue
        start = len(_render(tokenizer, messages[:i], gen_prompt=True))
        end_ids = _render(tokenizer, messages[: i + 1], gen_prompt=False)
        if end_ids != full[: len(end_ids)]:
            raise ValueError("chat template is not prefix-consistent; cannot locate assistant tokens")
        end = len(end_ids)
        span = full[start:end]
        if eos in span:  # stop after the turn's eos; trailing separators are template noise
            end = start + span.index(eos) + 1
        labels[start:end] = full[start:end]
    full, labels = full[:max_seq_len], labels[:max_seq_len]
    return EncodedExample(tuple(full), tuple(labels))


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int = 0, bucket_batches: int = 16
) -> list[list[int]]:
    """Return batches of example indices, grouped by length inside a seeded shuffle.

    Indices are shuffled, cut into buckets of `bucket_batches * batch_size`, each bucket is sorted by
    length and split into batches, and the batch order is shuffled. Padding then stays small while
    the order is still random. The result depends only on (lengths, batch_size, seed, epoch), which
    is what makes resume-from-checkpoint reproducible.

    Args:
        lengths: Token length of each example.
        batch_size: Examples per batch (the last batch may be smaller).
        seed: Data-order seed.
        epoch: Epoch number (mixed into the seed).
        bucket_batches: Batches per sorting bucket.

    Returns:
        A list of index lists.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    bucket = batch_size * bucket_batches
    batches: list[list[int]] = []
    for b in range(0, len(order), bucket):
        chunk = sorted(order[b : b + bucket], key=lambda i: lengths[i])
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding has attention 0 and label IGNORE_INDEX.

    Args:
        examples: Encoded examples.
        pad_id: Token id used for padding.

    Returns:
        {"input_ids", "attention_mask", "labels"} as [B, T] long tensors.
    """
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def move_tensor(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a CPU tensor to `device` without a host-device sync on CUDA.

    A plain `.to("cuda")` from pageable memory waits for the copy (a stream sync); from pinned
    memory with non_blocking=True the copy is queued behind the running kernels instead. On the
    CPU this is the plain move it always was.
    """
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """`move_tensor` for every tensor of a collated batch."""
    return {k: move_tensor(v, device) for k, v in batch.items()}


def target_count(example: EncodedExample) -> int:
    """Tokens of `example` that contribute to HF's shifted loss: labels from position 1 on."""
    return sum(1 for label in example.labels[1:] if label != IGNORE_INDEX)


T = TypeVar("T")


def take_cycled(pool: Sequence[T], cursor: int, k: int) -> tuple[list[T], int]:
    """k items of ``pool`` cycled from ``cursor``, and the cursor after them (resumable state)."""
    if not pool or k <= 0:
        return [], cursor
    return [pool[(cursor + i) % len(pool)] for i in range(k)], (cursor + k) % len(pool)
