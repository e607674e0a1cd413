"""Which device a job's training child will evaluate on, decided without importing torch.

The supervisor needs the answer before the child starts (the default evaluation size depends on it,
and so do the base-evaluation cache keys), and it never loads torch. With `training_device=auto` the
child uses CUDA when torch sees a GPU; the supervisor looks for what torch would find: an NVIDIA
device node that CUDA_VISIBLE_DEVICES does not hide. The supervisor's answer is the one both use (it
travels in request.json), so a wrong guess changes only how many prompts are evaluated, never which
cache entry matches.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

DeviceKind = Literal["cpu", "cuda"]


def gpu_visible(dev: Path = Path("/dev"), environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return any(dev.glob("nvidia[0-9]*"))


def evaluation_device(setting: str, *, gpu: bool | None = None) -> DeviceKind:
    """``cpu`` / ``cuda`` for the worker's `training_device` setting (``auto`` probes for a GPU)."""
    if setting in ("cpu", "cuda"):
        return setting  # type: ignore[return-value]
    if setting != "auto":
        raise ValueError(f"training_device must be auto, cpu or cuda, got {setting!r}")
    return "cuda" if (gpu_visible() if gpu is None else gpu) else "cpu"
