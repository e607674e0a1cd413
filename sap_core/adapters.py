"""PEFT adapter export/import in the standard two-file format (STYLE rule 21)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sap_core.atomic import write_dir_atomically
from sap_core.modeling import peft_compat_warnings

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# What a tokenizer's save_pretrained may write: shipped next to the adapter so that it is used with
# exactly the tokenizer and chat template it was trained with.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)


def save_adapter(
    model: PeftModel,
    out_dir: str | Path,
    base_model_name: str | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Path:
    """Write adapter_config.json + adapter_model.safetensors (and the tokenizer's files), atomically.

    Args:
        model: The PeftModel; its *current* adapter weights are written (with EMA, `finetune` has
            already copied the EMA weights in).
        out_dir: Destination folder (replaced if it exists).
        base_model_name: Value for base_model_name_or_path (e.g. the registry name, not a local
            cache path); None keeps what PEFT recorded.
        tokenizer: When given, its files (with the chat template it trained with) go alongside.

    Returns:
        The folder path.
    """
    configs = model.peft_config
    previous = {k: c.base_model_name_or_path for k, c in configs.items()}

    def write(tmp: Path) -> None:
        if base_model_name is not None:
            for c in configs.values():
                c.base_model_name_or_path = base_model_name
        model.save_pretrained(str(tmp), safe_serialization=True)
        # PEFT also writes a model-card README.md; the artifact contract is the two files only.
        for extra in tmp.iterdir():
            if extra.name not in ADAPTER_FILES:
                shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
        missing = [f for f in ADAPTER_FILES if not (tmp / f).is_file()]
        if missing:
            raise RuntimeError(f"PEFT did not write {missing}")
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
            for extra in tmp.iterdir():
                if extra.name not in ADAPTER_FILES + TOKENIZER_FILES:
                    shutil.rmtree(extra) if extra.is_dir() else extra.unlink()

    try:
        write_dir_atomically(out_dir, write)
    finally:
        for k, name in previous.items():
            configs[k].base_model_name_or_path = name
    return Path(out_dir)


def load_adapter(base_model: PreTrainedModel, adapter_dir: str | Path, trainable: bool = False) -> PeftModel:
    """Attach a saved adapter to `base_model`.

    Args:
        base_model: The same base the adapter was trained on.
        adapter_dir: Folder written by `save_adapter`.
        trainable: Load with trainable adapter weights (to continue training).

    Returns:
        The PeftModel (eval mode unless trainable).
    """
    with peft_compat_warnings():
        model = PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=trainable)
    if not trainable:
        model.eval()
    return model


def merge_adapter(model: PeftModel, out_dir: str | Path) -> Path:
    """Export merged full weights (base + adapter) of a *copy* of `model` with save_pretrained.

    Args:
        model: The PeftModel; left unchanged.
        out_dir: Destination folder (atomic: temp dir + rename).

    Returns:
        The folder path.
    """
    merged = copy.deepcopy(model).merge_and_unload()
    return write_dir_atomically(
        out_dir, lambda tmp: merged.save_pretrained(str(tmp), safe_serialization=True)
    )
