"""Plain dataclass configs for fine-tuning (STYLE rule 5: no environment, validated in __post_init__)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Guard = Literal["none", "sap", "ema"]
LrSchedule = Literal["cosine", "linear", "constant"]
_GUARDS = ("none", "sap", "ema")
_SCHEDULES = ("cosine", "linear", "constant")


def _bad(name: str, value: object, why: str) -> ValueError:
    return ValueError(f"{name}={value!r}: {why}")


@dataclass
class LoraSpec:
    """LoRA adapter shape."""

    r: int = field(default=8, metadata={"help": "LoRA rank (>0)."})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha; the update is scaled by alpha / r."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input, in [0, 1)."})
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj"),
        metadata={"help": "Names of the linear modules that get an adapter."},
    )

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        if self.r <= 0:
            raise _bad("r", self.r, "must be > 0")
        if self.alpha <= 0:
            raise _bad("alpha", self.alpha, "must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise _bad("dropout", self.dropout, "must be in [0, 1)")
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            raise _bad("target_modules", self.target_modules, "must be a non-empty tuple of module names")


@dataclass
class SapConfig:
    """Safety-Aware Probing (sap_ema.md §1.11)."""

    probe_layers: tuple[int, ...] | None = field(
        default=None,
        metadata={"help": "0-based decoder layers that get a probe vector; None = the middle third."},
    )
    probe_step: float = field(
        default=0.05, metadata={"help": "Probe step beta: each probe coordinate is +-probe_step (sign step)."}
    )
    radius: float = field(
        default=0.05,
        metadata={"help": "Relative radius rho: delta = rho * ||theta|| * g_hat (harmful perturbation)."},
    )
    refresh_every: int = field(
        default=8, metadata={"help": "Recompute the harmful direction every k optimizer steps."}
    )
    contrastive_batch_size: int = field(
        default=8, metadata={"help": "Contrastive triples per harmful-direction estimate."}
    )
    lagged_probe: bool = field(
        default=False,
        metadata={"help": "True = reference-code ordering: reuse last step's probe (3 passes, not 4)."},
    )
    # Default 2: the probe is one vector per layer and only sign(gv) is used, so a 2-example estimate
    # suffices; it brings SAP at k=8 from ~1.7x to ~1.1-1.4x plain SFT per step (bench/train_step.py).
    probe_batch_size: int | None = field(
        default=2,
        metadata={"help": "Examples of the task batch used for the probe gradient; None = whole batch."},
    )

    def __post_init__(self) -> None:
        if self.probe_layers is not None:
            self.probe_layers = tuple(self.probe_layers)
            if not self.probe_layers or any(i < 0 for i in self.probe_layers):
                raise _bad("probe_layers", self.probe_layers, "must be non-empty, 0-based layer indices")
        if self.probe_step <= 0:
            raise _bad("probe_step", self.probe_step, "must be > 0")
        if self.radius <= 0:
            raise _bad("radius", self.radius, "must be > 0")
        if self.refresh_every < 1:
            raise _bad("refresh_every", self.refresh_every, "must be >= 1")
        if self.contrastive_batch_size < 1:
            raise _bad("contrastive_batch_size", self.contrastive_batch_size, "must be >= 1")
        if self.probe_batch_size is not None and self.probe_batch_size < 1:
            raise _bad("probe_batch_size", self.probe_batch_size, "must be >= 1 or None")


@dataclass
class EmaConfig:
    """Parameter-space EMA of the trainable weights (sap_ema.md §2.2)."""

    decay: float = field(
        default=0.99, metadata={"help": "EMA decay lambda in [0, 1]; 1 keeps the start weights."}
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay <= 1.0:
            raise _bad("decay", self.decay, "must be in [0, 1]")


@dataclass
class TrainConfig:
    """Everything `finetune` needs besides the model and data."""

    guard: Guard = field(default="sap", metadata={"help": "Safety guard: none | sap | ema."})
    epochs: int = field(default=1, metadata={"help": "Passes over the training set."})
    max_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimizer steps (overrides epochs)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Examples per micro-batch."})
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "Fraction of steps with linear warm-up."})
    lr_schedule: LrSchedule = field(
        default="cosine", metadata={"help": "Decay after warm-up: cosine | linear | constant."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Global grad-norm clip; 0 disables."})
    max_seq_len: int = field(default=512, metadata={"help": "Truncate examples to this many tokens."})
    seed: int = field(default=0, metadata={"help": "Seed for data order, dropout and init."})
    eval_every: int = field(default=0, metadata={"help": "Validation loss every N steps; 0 = only at end."})
    checkpoint_every: int = field(default=0, metadata={"help": "Checkpoint every N steps; 0 = never."})
    lora: LoraSpec = field(default_factory=LoraSpec, metadata={"help": "LoRA adapter shape."})
    sap: SapConfig = field(default_factory=SapConfig, metadata={"help": "SAP settings (guard=sap)."})
    ema: EmaConfig = field(default_factory=EmaConfig, metadata={"help": "EMA settings (guard=ema)."})

    def __post_init__(self) -> None:
        if self.guard not in _GUARDS:
            raise _bad("guard", self.guard, f"must be one of {_GUARDS}")
        if self.lr_schedule not in _SCHEDULES:
            raise _bad("lr_schedule", self.lr_schedule, f"must be one of {_SCHEDULES}")
        for name in ("epochs", "batch_size", "grad_accum", "max_seq_len"):
            if getattr(self, name) < 1:
                raise _bad(name, getattr(self, name), "must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise _bad("max_steps", self.max_steps, "must be >= 1 or None")
        if self.learning_rate <= 0:
            raise _bad("learning_rate", self.learning_rate, "must be > 0")
        if self.weight_decay < 0:
            raise _bad("weight_decay", self.weight_decay, "must be >= 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise _bad("warmup_ratio", self.warmup_ratio, "must be in [0, 1)")
        if self.max_grad_norm < 0:
            raise _bad("max_grad_norm", self.max_grad_norm, "must be >= 0")
        for name in ("eval_every", "checkpoint_every", "seed"):
            if getattr(self, name) < 0:
                raise _bad(name, getattr(self, name), "must be >= 0")
        for name, cls in (("lora", LoraSpec), ("sap", SapConfig), ("ema", EmaConfig)):
            if not isinstance(getattr(self, name), cls):
                raise _bad(name, getattr(self, name), f"must be a {cls.__name__}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (tuples become lists)."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build a config from `to_dict()` output; unknown keys raise ValueError.

        Args:
            data: Mapping as produced by `to_dict()`; nested configs may be partial.

        Returns:
            A validated TrainConfig.
        """
        nested = {"lora": LoraSpec, "sap": SapConfig, "ema": EmaConfig}
        kwargs = dict(_checked_keys(cls, data, "TrainConfig"))
        for key, sub in nested.items():
            if key in kwargs and not isinstance(kwargs[key], sub):
                kwargs[key] = sub(**_checked_keys(sub, kwargs[key], key))
        return cls(**kwargs)


def _checked_keys(cls: type, data: object, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _bad(where, data, "must be a dict")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known keys are {sorted(known)}")
    return dict(data)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj
