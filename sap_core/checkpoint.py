"""Training checkpoints: PEFT adapter files + an internal `trainer_state.pt`, written atomically.

`trainer_state.pt` is internal resume state (optimizer, scheduler, RNG, EMA, SAP, step); it is never
handed to users, so torch.save is acceptable here (STYLE rule 21 covers user artifacts only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file

from sap_core.adapters import save_adapter
from sap_core.atomic import write_dir_atomically

STATE_FILE = "trainer_state.pt"


def rng_state() -> dict[str, Any]:
    """Capture every RNG the training loop consumes (torch CPU + all CUDA devices)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNGs captured by `rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(checkpoint_dir: str | Path, step: int, model: PeftModel, state: dict[str, Any]) -> Path:
    """Write checkpoint_dir/step-N with the live adapter weights and `state`, atomically.

    Args:
        checkpoint_dir: Parent folder.
        step: Optimizer steps completed.
        model: The PeftModel (live weights are saved; EMA shadows travel in `state`).
        state: Resume state (tensors and plain Python values).

    Returns:
        The step-N folder.
    """

    def write(tmp: Path) -> None:
        save_adapter(model, tmp / "adapter")
        for f in (tmp / "adapter").iterdir():
            os.replace(f, tmp / f.name)
        (tmp / "adapter").rmdir()
        torch.save({"step": step, **state}, tmp / STATE_FILE)

    return write_dir_atomically(Path(checkpoint_dir) / f"step-{step}", write)


def load_checkpoint(path: str | Path, model: PeftModel) -> dict[str, Any]:
    """Load adapter weights from `path` into `model` and return the trainer state.

    Args:
        path: A step-N folder written by `save_checkpoint`.
        model: PeftModel with the same adapter shape.

    Returns:
        The dict saved as `state` (plus "step").
    """
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"resume_from={str(path)!r}: no {STATE_FILE}")
    weights = load_file(str(path / "adapter_model.safetensors"))
    device = next(model.parameters()).device
    result = set_peft_model_state_dict(model, {k: v.to(device) for k, v in weights.items()})
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"checkpoint adapter has unexpected keys {unexpected}")
    # weights_only: the blob may come back from a database row; it must never be able to run code.
    state: dict[str, Any] = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    return state
