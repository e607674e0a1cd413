"""Data-parallel training over ranks that a launcher (torchrun) started: sharding and gradient averaging.

`finetune` trains under DDP semantics whenever a `torch.distributed` process group is initialised
by the caller (sap_core never reads the environment, STYLE rule 5). Every rank holds the whole
model and the whole dataset; each optimizer step's global micro-batches are the single-process
ones, and rank r takes rows r, r + W, r + 2W, ... of each. Each rank runs its guards on its own
shard (the anchor's gradient surgery and SAP's probe passes stay per rank); then the trainable
gradients are averaged once per step, before clipping, so every rank applies the same update and
the weights never drift apart. We average explicitly instead of wrapping the model in
`DistributedDataParallel`: DDP all-reduces inside `backward()`, and the guards call backward for
passes whose gradients must not be averaged (SAP's probe gradients, the anchor's own gradient
before surgery).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place among the data-parallel ranks."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone runs callbacks, validation and checkpoints."""
        return self.rank == 0

    def shard(self, example_ids: Sequence[int]) -> tuple[list[int], bool]:
        """This rank's rows of one global micro-batch.

        Args:
            example_ids: The global micro-batch (the single-process one).

        Returns:
            (rows, real): when the micro-batch has fewer rows than ranks, a rank left without one
            gets the first row with real=False: it runs the passes with weight 0, so every rank
            still reaches every collective and every guard sees a batch.
        """
        mine = list(example_ids[self.rank :: self.world_size])
        if mine:
            return mine, True
        return list(example_ids[:1]), False


def current_ranks() -> Ranks:
    """The initialised process group's rank and size; a single rank when there is none."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def broadcast_parameters(params: Sequence[torch.Tensor]) -> None:
    """Give every rank rank 0's trainable weights (a fresh adapter's init draws from each rank's RNG)."""
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def average_gradients(params: Sequence[torch.Tensor], world_size: int) -> None:
    """All-reduce the trainable gradients into their mean across ranks, as one flat buffer.

    One collective per step over the (small) LoRA weights; a missing gradient counts as zero.
    """
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(world_size)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g)
        offset += n


def sum_across_ranks(value: torch.Tensor) -> torch.Tensor:
    """Sum a (device) scalar over the ranks; stays on the device, no host sync."""
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def broadcast_stop(stop: bool, device: torch.device) -> bool:
    """Rank 0's stop decision, on every rank (otherwise the others would wait at the next collective)."""
    flag = torch.tensor([1 if stop else 0], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())
