"""What this deployment's workers can train, as far as the API can tell without importing torch."""

from __future__ import annotations

import importlib.util

from safetune.config import Settings


def qlora_available(settings: Settings) -> bool:
    """Whether jobs may ask for a 4-bit (QLoRA) base.

    SAFETUNE_QLORA_AVAILABLE decides when set (an API host without GPUs in front of GPU workers);
    unset, it is whether bitsandbytes is installed here, which is the worker's image in the shipped
    compose file. The worker checks again, with CUDA, before loading.
    """
    if settings.qlora_available is not None:
        return settings.qlora_available
    return importlib.util.find_spec("bitsandbytes") is not None
