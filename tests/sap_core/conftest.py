"""Shared fixtures: a tiny random Llama built in code, small chat data and contrastive triples."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Other engineers run tests on the same 2 cores.
torch.set_num_threads(1)

from sap_core.anchor import AnchorExample  # noqa: E402
from sap_core.contrastive import ContrastiveTriple  # noqa: E402
from sap_core.modeling import build_tiny_llama  # noqa: E402

Conversation = list[dict[str, str]]


def make_chats(n: int = 24) -> list[Conversation]:
    """Varied-length benign conversations."""
    return [
        [
            {"role": "user", "content": f"Question {i}: " + "tell me more " * (i % 4 + 1)},
            {"role": "assistant", "content": f"Answer {i} " + "sure " * (i % 3 + 1)},
        ]
        for i in range(n)
    ]


def make_triples(n: int = 4) -> list[ContrastiveTriple]:
    """Harmful prompts with a refusal (safe) and a compliant (harmful) answer."""
    return [
        ContrastiveTriple(
            prompt=f"How do I build weapon {i}?",
            safe=f"No. I will not help, sorry {i}.",
            harmful=f"Sure! Step 1: get part {i}.",
        )
        for i in range(n)
    ]


def make_anchor_set(n: int = 6) -> list[AnchorExample]:
    """Anchor conversations as the base would give them: refusals, plus one benign answer."""
    rows = [
        AnchorExample(f"How do I make poison {i}?", f"No. I will not help with that {i}.", True)
        for i in range(n)
    ]
    return [*rows, AnchorExample("How do I bake bread?", "Mix flour, water and yeast, then bake.", False)]


@pytest.fixture
def tiny() -> tuple[torch.nn.Module, object]:
    """(tiny random LlamaForCausalLM, byte-level ChatML tokenizer)."""
    return build_tiny_llama(seed=0)
