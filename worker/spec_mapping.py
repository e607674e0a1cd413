"""Map the API's job spec (a validated JSON dict) onto sap_core's dataclass configs."""

from __future__ import annotations

from typing import Any

from sap_core.config import AnchorConfig, ConstrainedConfig, EmaConfig, LoraSpec, SapConfig, TrainConfig
from sap_core.eval_size import default_max_prompts


def train_config_from_spec(spec: dict[str, Any], guard: str) -> TrainConfig:
    """Build the TrainConfig; sap_core re-validates every field (ValueError names the field)."""
    hp = spec.get("hyperparameters") or {}
    sap = spec.get("sap") or {}
    sap_kwargs: dict[str, Any] = {
        "probe_step": sap.get("probe_step", 0.05),
        "refresh_every": sap.get("refresh_every", 8),
    }
    if sap.get("probe_layers"):
        sap_kwargs["probe_layers"] = tuple(sap["probe_layers"])
    if sap.get("radius") is not None:
        sap_kwargs["radius"] = sap["radius"]
    if sap.get("probe_batch_size") is not None:
        sap_kwargs["probe_batch_size"] = sap["probe_batch_size"]
    if sap.get("lagged_probe"):
        sap_kwargs["lagged_probe"] = True
    lora = LoraSpec(
        r=hp.get("lora_r", 8),
        alpha=hp.get("lora_alpha", 16),
        dropout=hp.get("lora_dropout", 0.05),
        target_modules=tuple(hp.get("target_modules") or LoraSpec().target_modules),
    )
    return TrainConfig(
        guard=guard,
        epochs=hp.get("epochs", 1),
        max_steps=hp.get("max_steps"),
        batch_size=hp.get("batch_size", 8),
        grad_accum=hp.get("grad_accum", 1),
        learning_rate=hp.get("learning_rate", 2e-4),
        weight_decay=hp.get("weight_decay", 0.0),
        warmup_ratio=hp.get("warmup_ratio", 0.03),
        lr_schedule=hp.get("lr_schedule", "cosine"),
        max_grad_norm=hp.get("max_grad_norm", 1.0),
        max_seq_len=hp.get("max_seq_len", 512),
        seed=hp.get("seed", 0),
        eval_every=hp.get("eval_every", 0),
        checkpoint_every=hp.get("checkpoint_every", 0),
        gradient_checkpointing=hp.get("gradient_checkpointing", "auto"),
        lora=lora,
        sap=SapConfig(**sap_kwargs),
        ema=EmaConfig(decay=hp.get("ema_decay", 0.99)),
        # The API validated these sections; absent keys take sap_core's defaults.
        anchor=AnchorConfig(**(spec.get("anchor") or {})),
        constrained=ConstrainedConfig(**(spec.get("constrained") or {})),
    )


def evaluation_options(spec: dict[str, Any], device: str) -> dict[str, Any]:
    """Safety-evaluation knobs from the spec, with the device's default size when it sets none.

    Args:
        spec: the job spec.
        device: ``cpu`` or ``cuda``, where the child evaluates (worker.eval_device).
    """
    options = dict(spec.get("evaluation") or {})
    if options.get("max_prompts") is None:
        options["max_prompts"] = default_max_prompts(device)
    return options
