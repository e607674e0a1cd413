"""What a user-facing adapter archive holds: the two files PeftModel.save_pretrained writes (STYLE
rule 21), plus the tokenizer files with the chat template the job trained with, when the worker
saved them. The worker packs them, the CLI checks a download against them.

sap_core.adapters, which writes them, is a library that cannot import this package and keeps its own
copy; tests/safetune/test_adapter_format.py holds the two equal.
"""

from __future__ import annotations

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)
