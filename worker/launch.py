"""How the training child is started: one process, or N data-parallel ranks under torchrun.

With more than one process per job (SAFETUNE_PROCESSES_PER_JOB, or the GPUs in SAFETUNE_GPUS) the
child is `torchrun --standalone --nproc_per_node N -m worker.training_process JOB_DIR`: torchrun
picks a free rendezvous port on this machine, starts the ranks, and stops them all when one fails.
torchrun leads the process group the supervisor stops; the ranks lead their own sessions (torchrun
starts them that way), so each rank also watches torchrun and the supervisor and kills itself
when either is gone (`child_lifecycle.exit_with_parent`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from safetune.config import Settings

CHILD_MODULE = "worker.training_process"


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    world_size: int


def training_launch(settings: Settings, job_dir: Path) -> Launch:
    """The command line and environment of the training child for this worker's settings."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    if settings.gpu_list:
        # The job sees exactly this worker's GPUs, as cuda:0..N-1 (rank r uses cuda:r).
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in settings.gpu_list)
    n = settings.job_processes
    if n == 1:
        return Launch([sys.executable, "-m", CHILD_MODULE, str(job_dir)], env, 1)
    # One CPU thread per rank unless the operator chose; torchrun would set 1 and warn.
    env.setdefault("OMP_NUM_THREADS", "1")
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",  # what the `torchrun` script runs, with this interpreter
        "--standalone",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(n),
        "-m",
        CHILD_MODULE,
        str(job_dir),
    ]
    return Launch(argv, env, n)
