"""The training child as one rank of a torchrun job: process group, device, and who speaks.

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE (and the rendezvous address) in each rank's
environment; without them the child is the single process it always was.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from sap_core.distributed import Ranks


def join_ranks(device_setting: str | None) -> tuple[Ranks, str | None]:
    """Join the job's process group when started by torchrun.

    Args:
        device_setting: The worker's training device ("cpu", "cuda", or None for auto).

    Returns:
        (this rank, the device it trains on; None = the single-process default).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(), device_setting
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device_setting != "cpu" and torch.cuda.is_available():
        # CUDA_VISIBLE_DEVICES holds the worker's GPUs; local rank r owns the r-th of them.
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local))
        return Ranks(rank, world), f"cuda:{local}"
    dist.init_process_group("gloo")
    return Ranks(rank, world), "cpu"


def leave_ranks() -> None:
    """Leave the process group (after the last collective) so the rank exits cleanly."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
