"""Plain dataclass configs for fine-tuning (STYLE rule 5: no environment, validated in __post_init__)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

LrSchedule = Literal["cosine", "linear", "constant"]
Switch = Literal["auto", "on", "off"]
# Guards compose with "+" ("anchor+constrained"); "none" stands alone.
GUARD_NAMES = ("none", "sap", "ema", "anchor", "constrained")
# The guard new jobs get: the one the matched-utility frontier shows best (bench/safety_frontier.py).
DEFAULT_GUARD = "anchor"
_SCHEDULES = ("cosine", "linear", "constant")
_SWITCHES = ("auto", "on", "off")
# Above this many base parameters "auto" turns gradient checkpointing on: from the 1B class up the
# activations, not the frozen weights, decide whether a batch fits (recompute costs ~1/3 more compute).
GRADIENT_CHECKPOINTING_MIN_PARAMS = 1_000_000_000


def guard_parts(guard: str) -> tuple[str, ...]:
    """Split a composed guard name ("anchor+constrained") into its known parts, validated.

    Args:
        guard: One name from GUARD_NAMES or several joined by "+".

    Returns:
        The parts in the given order; () for "none".

    Raises:
        ValueError: Unknown part, a repeated part, or "none" combined with another guard.
    """
    parts = tuple(p.strip() for p in str(guard).split("+"))
    unknown = [p for p in parts if p not in GUARD_NAMES]
    if unknown:
        raise _bad("guard", guard, f"unknown part(s) {unknown}; known: {list(GUARD_NAMES)} joined by '+'")
    if len(set(parts)) != len(parts):
        raise _bad("guard", guard, "a guard is named twice")
    if "none" in parts:
        if len(parts) > 1:
            raise _bad("guard", guard, "'none' cannot be combined with another guard")
        return ()
    return parts


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
class AnchorConfig:
    """Self-distilled refusal anchor with gradient surgery (guards.md §1.2 SafeGrad, §7.1)."""

    weight: float = field(default=1.0, metadata={"help": "rho: the step is g_task' + rho * g_anchor."})
    projection: bool = field(
        default=True,
        metadata={
            "help": "Remove the task gradient's component against the anchor gradient when they "
            "conflict; false = plain replay (loss + rho * anchor loss)."
        },
    )
    loss: Literal["kl", "ce"] = field(
        default="kl",
        metadata={"help": "kl = KL(base || tuned) on the anchor answers; ce = cross-entropy on them."},
    )
    batch_size: int = field(default=4, metadata={"help": "Anchor conversations per anchored step."})
    benign_per_batch: int | None = field(
        default=None,
        metadata={
            "help": "Of each anchor batch, this many are benign requests (the rest harmful), so "
            "the base's helpful answers are held on every anchored step, not once per cycle; "
            "default half the batch (rounded down)."
        },
    )
    every: int = field(default=1, metadata={"help": "Anchor every k optimizer steps."})
    n_harmful: int = field(default=96, metadata={"help": "Harmful anchor prompts (disjoint from eval)."})
    n_benign: int = field(
        default=32,
        metadata={"help": "Benign anchor prompts (formatted tasks alternating with short requests)."},
    )
    max_new_tokens: int = field(default=48, metadata={"help": "Length of the base's cached anchor answers."})

    def benign_count(self) -> int:
        """Benign conversations in each anchor batch (``benign_per_batch``, resolved)."""
        return self.batch_size // 2 if self.benign_per_batch is None else self.benign_per_batch

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise _bad("weight", self.weight, "must be >= 0")
        if self.loss not in ("kl", "ce"):
            raise _bad("loss", self.loss, "must be 'kl' or 'ce'")
        for name in ("batch_size", "every", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise _bad(name, getattr(self, name), "must be >= 1")
        self.benign_per_batch = self.benign_count()
        if not 0 <= self.benign_per_batch < self.batch_size:
            raise _bad("benign_per_batch", self.benign_per_batch, "must be >= 0 and < batch_size")
        if self.n_harmful < 1 or self.n_benign < 0:
            raise _bad(
                "n_harmful/n_benign", (self.n_harmful, self.n_benign), "need >= 1 harmful, >= 0 benign"
            )


@dataclass
class ConstrainedConfig:
    """Token-wise constrained SFT (Qi et al. 2024; guards.md §1.2): beta per response position."""

    first_beta: float = field(default=0.5, metadata={"help": "beta of the first response token."})
    early_beta: float = field(default=2.0, metadata={"help": "beta of response tokens 2..early_tokens."})
    early_tokens: int = field(default=5, metadata={"help": "Response tokens held by first/early beta."})
    late_beta: float = field(default=0.1, metadata={"help": "beta of every later response token."})

    def __post_init__(self) -> None:
        for name in ("first_beta", "early_beta", "late_beta"):
            if getattr(self, name) <= 0:
                raise _bad(name, getattr(self, name), "must be > 0")
        if self.early_tokens < 1:
            raise _bad("early_tokens", self.early_tokens, "must be >= 1")


@dataclass
class TrainConfig:
    """Everything `finetune` needs besides the model and data."""

    guard: str = field(
        default=DEFAULT_GUARD,
        metadata={"help": "Safety guard: none | sap | ema | anchor | constrained, or several joined by '+'."},
    )
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
    gradient_checkpointing: Switch = field(
        default="auto",
        metadata={"help": "Recompute activations in backward: on | off | auto (on above the threshold)."},
    )
    gradient_checkpointing_min_params: int = field(
        default=GRADIENT_CHECKPOINTING_MIN_PARAMS,
        metadata={"help": "Model parameters from which gradient_checkpointing='auto' turns it on."},
    )
    lora: LoraSpec = field(default_factory=LoraSpec, metadata={"help": "LoRA adapter shape."})
    sap: SapConfig = field(default_factory=SapConfig, metadata={"help": "SAP settings (guard=sap)."})
    ema: EmaConfig = field(default_factory=EmaConfig, metadata={"help": "EMA settings (guard=ema)."})
    anchor: AnchorConfig = field(
        default_factory=AnchorConfig, metadata={"help": "Refusal-anchor settings (guard=anchor)."}
    )
    constrained: ConstrainedConfig = field(
        default_factory=ConstrainedConfig, metadata={"help": "Constrained-SFT settings (guard=constrained)."}
    )

    def __post_init__(self) -> None:
        guard_parts(self.guard)
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
        if self.gradient_checkpointing not in _SWITCHES:
            raise _bad("gradient_checkpointing", self.gradient_checkpointing, f"must be one of {_SWITCHES}")
        if self.max_grad_norm < 0:
            raise _bad("max_grad_norm", self.max_grad_norm, "must be >= 0")
        for name in ("eval_every", "checkpoint_every", "seed", "gradient_checkpointing_min_params"):
            if getattr(self, name) < 0:
                raise _bad(name, getattr(self, name), "must be >= 0")
        for name, cls in _NESTED.items():
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
        kwargs = dict(_checked_keys(cls, data, "TrainConfig"))
        for key, sub in _NESTED.items():
            if key in kwargs and not isinstance(kwargs[key], sub):
                kwargs[key] = sub(**_checked_keys(sub, kwargs[key], key))
        return cls(**kwargs)


_NESTED: dict[str, type] = {
    "lora": LoraSpec,
    "sap": SapConfig,
    "ema": EmaConfig,
    "anchor": AnchorConfig,
    "constrained": ConstrainedConfig,
}


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
