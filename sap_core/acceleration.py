"""The GPU path's switches: gradient checkpointing, SDPA attention, and the optional 4-bit (QLoRA) base.

bf16 weights and autocast live in `modeling` (`load_base_model`, `autocast_for`). Nothing here
changes the CPU default: the tiny model and SmolLM2 are far below the checkpointing threshold, and
QLoRA is refused without CUDA.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from peft import PeftModel

from sap_core.config import TrainConfig

# PyTorch's fused scaled-dot-product attention (flash / memory-efficient kernels on CUDA); every
# architecture transformers ships supports it, so it is asked for by name rather than left implicit.
ATTENTION = "sdpa"
QLORA = "4bit"


def base_parameter_count(model: torch.nn.Module) -> int:
    """Parameters of the model as loaded (a 4-bit weight counts as its logical element count)."""
    total = 0
    for p in model.parameters():
        # bitsandbytes packs two 4-bit values per uint8 element.
        total += p.numel() * 2 if p.dtype == torch.uint8 else p.numel()
    return total


def wants_gradient_checkpointing(model: torch.nn.Module, config: TrainConfig) -> bool:
    """Whether `config` turns gradient checkpointing on for `model` ("auto": by parameter count)."""
    if config.gradient_checkpointing == "auto":
        return base_parameter_count(model) >= config.gradient_checkpointing_min_params
    return config.gradient_checkpointing == "on"


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in backward instead of storing them.

    Non-reentrant checkpointing: it needs no input that requires grad (the frozen embeddings give
    none under LoRA) and keeps the RNG state, so dropout masks replay. transformers 5 checkpoints
    each layer's `forward` and leaves its module hooks outside, so SAP's probe (added by a forward
    hook on the layer) stays an ordinary op of the graph and is not replayed.

    Args:
        model: A PeftModel or a plain transformers model.
    """
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    kwargs = {"use_reentrant": False}
    # transformers 5 renamed it to activation checkpointing; the old name warns and goes in v6.
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)  # type: ignore[operator]
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)  # type: ignore[operator]
    # The KV cache is useless in training and incompatible with recomputation.
    config = getattr(base, "config", None)
    if config is not None and hasattr(config, "use_cache"):
        config.use_cache = False


def gradient_checkpointing_active(model: torch.nn.Module) -> bool:
    """True when any submodule has checkpointing switched on."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def qlora_unavailable_reason(device: str) -> str | None:
    """Why this process cannot train a 4-bit base on `device`, or None when it can."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "QLoRA needs the bitsandbytes package, which is not installed on this worker"
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return "QLoRA needs a CUDA GPU; this worker trains on the CPU"
    return None


def quantized_load_kwargs() -> dict[str, Any]:
    """from_pretrained kwargs for a 4-bit NF4 base with bf16 compute (the QLoRA recipe)."""
    from transformers import BitsAndBytesConfig

    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    }


def prepare_quantized(model: torch.nn.Module) -> torch.nn.Module:
    """PEFT's preparation of a k-bit base: norms in fp32, inputs that carry grads for checkpointing."""
    from peft import prepare_model_for_kbit_training

    # Checkpointing is decided by TrainConfig in finetune, not here.
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
