"""safetune.base_models: the registry's per-model limits hold for the real tokenizers."""

from __future__ import annotations

from typing import Any

import pytest

from safetune.base_models import REGISTRY
from safetune.config import get_settings
from sap_core.contrastive import default_contrastive_triples
from sap_core.data import IGNORE_INDEX, encode_chat
from sap_core.modeling import build_tiny_tokenizer

MIN_RESPONSE_TOKENS = 16


def _tokenizer(name: str) -> Any:
    if REGISTRY[name].source == "tiny":
        return build_tiny_tokenizer()
    from transformers import AutoTokenizer

    local = REGISTRY[name].local_dir(get_settings().model_cache)
    if not (local / "tokenizer.json").exists():
        pytest.skip(f"{name} is not in the model cache ({local})")
    return AutoTokenizer.from_pretrained(str(local), local_files_only=True)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_min_sap_seq_len_keeps_responses_in_every_contrastive_pair(name: str) -> None:
    # The guard encodes each (prompt, safe) and (prompt, harmful) pair at the job's max_seq_len; at
    # the registry's minimum each must keep labelled response tokens, or its gradient is zero.
    tokenizer = _tokenizer(name)
    length = REGISTRY[name].min_sap_seq_len
    chats = [
        [{"role": "user", "content": triple.prompt}, {"role": "assistant", "content": response}]
        for triple in default_contrastive_triples()
        for response in (triple.safe, triple.harmful)
    ]

    def labelled(chat: list[dict[str, str]], max_seq_len: int) -> int:
        return sum(label != IGNORE_INDEX for label in encode_chat(tokenizer, chat, max_seq_len).labels)

    counts = [(labelled(chat, length), labelled(chat, 100_000)) for chat in chats]
    # A short refusal may have fewer tokens than MIN_RESPONSE_TOKENS: then all of it must be kept.
    cut = [(kept, full) for kept, full in counts if kept < min(MIN_RESPONSE_TOKENS, full)]
    assert not cut, (name, length, cut[:3])
