"""The operator's models file (YAML at SAFETUNE_MODELS_FILE): schema, loading, cheap checks, writing.

Cheap checks read only the folder listing and config.json, so the API (no torch) can fail closed at
start-up; sap_core.model_check does the heavy ones (tokenizer, template rendering, loss mask).
Every failure names the entry and the field, e.g. ``entry 'llama-7b' field 'path': ...``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Template names that resolve without a file; sap_core.model_check holds their text.
BUILTIN_CHAT_TEMPLATES = ("chatml", "zephyr", "llama2")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class ModelsFileError(ValueError):
    """A models-file entry is unusable; the message names the entry and the field."""

    def __init__(self, entry: str, field: str, problem: str) -> None:
        self.entry, self.field, self.problem = entry, field, problem
        super().__init__(f"models file: entry {entry!r} field {field!r}: {problem}")


class ModelEntry(BaseModel):
    """One operator-registered base model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    path: Path = Field(description="local Hugging Face folder: config.json, tokenizer, *.safetensors")
    chat_template: str = Field(
        default="tokenizer", description="'tokenizer', a built-in name (chatml, ...) or a .jinja file"
    )
    max_seq_len: int = Field(ge=16, le=1_048_576)
    lora_target_modules: list[str] | None = Field(
        default=None, min_length=1, description="default: every linear layer of the decoder (not lm_head)"
    )
    probe_layers: list[int] | None = Field(default=None, min_length=1, description="SAP's default layers")
    dtype: Dtype = Field(default="auto", description="weights on GPU; auto = bfloat16 (CPU trains fp32)")
    trust_remote_code: bool = False
    aligned_from: str | None = Field(default=None, description="the registered base it was aligned from")
    description: str = ""

    def template_file(self) -> Path | None:
        """The .jinja file this entry names, or None for 'tokenizer' and built-in names."""
        return Path(self.chat_template) if self.chat_template.endswith(".jinja") else None


class ModelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelEntry] = Field(default_factory=list)


def _entry_label(raw: Any, index: int) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        return str(raw["name"])
    return f"#{index}"


def parse_models_file(path: Path) -> list[ModelEntry]:
    """Parse and schema-check the YAML; relative paths resolve against the file's folder."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ModelsFileError("-", "-", f"cannot read {path}: {exc}") from exc
    try:
        parsed = ModelsFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        entries = raw.get("models") if isinstance(raw, dict) else None
        if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int) and isinstance(entries, list):
            field = ".".join(str(p) for p in loc[2:]) or "-"
            raise ModelsFileError(_entry_label(entries[loc[1]], loc[1]), field, first["msg"]) from exc
        raise ModelsFileError("-", ".".join(str(p) for p in loc) or "-", first["msg"]) from exc
    base = path.parent
    entries_out = []
    for entry in parsed.models:
        updates: dict[str, Any] = {"path": (base / entry.path).resolve()}
        template = entry.template_file()
        if template is not None:
            updates["chat_template"] = str((base / template).resolve())
        entries_out.append(entry.model_copy(update=updates))
    return entries_out


def read_config(entry: ModelEntry) -> dict[str, Any]:
    """config.json of the entry's folder, or a ModelsFileError naming what is missing."""
    if not entry.path.is_dir():
        raise ModelsFileError(entry.name, "path", f"folder {entry.path} does not exist")
    config_path = entry.path / "config.json"
    if not config_path.is_file():
        raise ModelsFileError(entry.name, "path", f"{entry.path} has no config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelsFileError(entry.name, "path", f"config.json is unreadable: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelsFileError(entry.name, "path", "config.json is not an object")
    return config


def config_positions(config: dict[str, Any]) -> int | None:
    for key in POSITION_KEYS:
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def config_layers(config: dict[str, Any]) -> int:
    return int(config.get("num_hidden_layers") or config.get("n_layer") or 0)


def cheap_check(entry: ModelEntry, known_names: set[str]) -> dict[str, Any]:
    """Files, architecture name, positions, template reference; returns config.json."""
    config = read_config(entry)
    if not any((entry.path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelsFileError(
            entry.name, "path", f"{entry.path} has no tokenizer ({', '.join(TOKENIZER_FILES)})"
        )
    if not any(entry.path.glob("*.safetensors")):
        raise ModelsFileError(entry.name, "path", f"{entry.path} has no *.safetensors weights")
    architectures = config.get("architectures") or []
    if not architectures or not all(str(a).endswith("ForCausalLM") for a in architectures):
        raise ModelsFileError(
            entry.name, "path", f"architecture {architectures} is not a causal LM (…ForCausalLM)"
        )
    positions = config_positions(config)
    if positions is not None and entry.max_seq_len > positions:
        raise ModelsFileError(
            entry.name, "max_seq_len", f"{entry.max_seq_len} exceeds the config's {positions} positions"
        )
    layers = config_layers(config)
    if layers < 1:
        raise ModelsFileError(entry.name, "path", "config.json names no num_hidden_layers")
    if entry.probe_layers and max(entry.probe_layers) >= layers:
        raise ModelsFileError(entry.name, "probe_layers", f"must be below the model's {layers} layers")
    template = entry.template_file()
    if template is not None and not template.is_file():
        raise ModelsFileError(entry.name, "chat_template", f"template file {template} does not exist")
    if template is None and entry.chat_template not in ("tokenizer", *BUILTIN_CHAT_TEMPLATES):
        raise ModelsFileError(
            entry.name,
            "chat_template",
            f"{entry.chat_template!r}: use 'tokenizer', one of {list(BUILTIN_CHAT_TEMPLATES)} or a .jinja",
        )
    if entry.aligned_from is not None and entry.aligned_from not in known_names:
        raise ModelsFileError(entry.name, "aligned_from", f"{entry.aligned_from!r} is not a registered model")
    return config


def add_entry(path: Path, entry: ModelEntry) -> None:
    """Append `entry` to the YAML file (created if absent); a duplicate name is refused."""
    existing: dict[str, Any] = {}
    if path.is_file():
        existing = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    models = list(existing.get("models") or [])
    if any(isinstance(m, dict) and m.get("name") == entry.name for m in models):
        raise ModelsFileError(entry.name, "name", f"already registered in {path}")
    models.append(entry.model_dump(mode="json", exclude_defaults=True) | {"name": entry.name})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump({**existing, "models": models}, sort_keys=False), encoding="utf-8")
    tmp.replace(path)
