"""The base model of a job as its registry entry says: folder, chat template, dtype, LoRA defaults.

Also the heavy start-up check of every models-file entry (sap_core.model_check), which the worker
runs before it takes jobs and `safetune models check` runs on demand.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from safetune.base_models import BaseModelInfo, get_base_model, registry
from safetune.models_file import ModelsFileError
from sap_core.config import TrainConfig
from sap_core.model_check import (
    ModelCheckFailed,
    ModelCheckSpec,
    check_model,
    resolve_chat_template,
    template_record,
)
from sap_core.modeling import decoder_linear_modules, load_base_model
from worker.model_store import ensure_model


class QuantizationRejected(ValueError):
    """The job asked for a quantized base this worker cannot load (no bitsandbytes, no GPU)."""


@dataclasses.dataclass
class JobModel:
    info: BaseModelInfo
    model_dir: Path
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    # {"source", "text", "sha256"}: the exact template the job trains and evaluates with.
    chat_template: dict[str, str]


def check_registered_models() -> list[dict[str, Any]]:
    """Heavy checks of every models-file entry; the first failure raises ModelsFileError naming it."""
    found = []
    for info in registry().values():
        if info.entry is None:
            continue
        spec = ModelCheckSpec(
            info.entry.path, info.entry.max_seq_len, info.entry.chat_template, info.entry.trust_remote_code
        )
        try:
            found.append({"name": info.name, **check_model(spec)})
        except ModelCheckFailed as exc:
            raise ModelsFileError(info.name, exc.field, exc.problem) from exc
    return found


def load_job_model(
    base_model: str, model_cache: Path, device: str | None, quantization: str | None
) -> JobModel:
    """Build or locate the folder, load it with the entry's settings and its chat template."""
    info = get_base_model(base_model)
    model_dir = ensure_model(base_model, model_cache)
    entry = info.entry
    try:
        model, tokenizer = load_base_model(
            model_dir,
            device,
            quantization=quantization,
            dtype=entry.dtype if entry else "auto",
            trust_remote_code=entry.trust_remote_code if entry else False,
        )
    except ValueError as exc:
        if quantization is not None and "quantization" in str(exc):
            raise QuantizationRejected(f"hyperparameters.{exc}") from exc
        raise
    text = resolve_chat_template(tokenizer, info.chat_template)
    tokenizer.chat_template = text
    return JobModel(info, model_dir, model, tokenizer, template_record(info.chat_template, text))


def apply_model_defaults(config: TrainConfig, spec: dict[str, Any], job_model: JobModel) -> TrainConfig:
    """The entry's LoRA targets (default: every decoder linear layer) and SAP probe layers, where the
    job named none. The built-ins keep sap_core's defaults."""
    entry = job_model.info.entry
    if entry is None:
        return config
    if not (spec.get("hyperparameters") or {}).get("target_modules"):
        base = job_model.model.get_base_model() if isinstance(job_model.model, PeftModel) else job_model.model
        modules = entry.lora_target_modules or list(decoder_linear_modules(base))
        config.lora = dataclasses.replace(config.lora, target_modules=tuple(modules))
    if entry.probe_layers and not (spec.get("sap") or {}).get("probe_layers"):
        config.sap = dataclasses.replace(config.sap, probe_layers=tuple(entry.probe_layers))
    return config
