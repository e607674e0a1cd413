"""The training child's conversations: the job's JSONL files as written by the supervisor, and the
held-out split when the user gave no validation file."""

from __future__ import annotations

import json
import random
from pathlib import Path


def read_chat_jsonl(path: str | None) -> list[list[dict[str, str]]]:
    if not path:
        return []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["messages"] for line in lines if line.strip()]


def split_validation(
    train: list[list[dict[str, str]]], fraction: float, seed: int
) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]]]:
    """Deterministic held-out split (by seed) when the user gave no validation file."""
    if fraction <= 0 or len(train) < 2:
        return train, []
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    n_val = max(1, int(round(len(train) * fraction)))
    held = set(order[:n_val])
    return [ex for i, ex in enumerate(train) if i not in held], [train[i] for i in sorted(held)]
