"""worker.launch: one process, or torchrun with N ranks; and torchrun ranks never outlive the supervisor."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from safetune.config import Settings
from tests.worker.test_child_lifecycle import gone
from worker import child_lifecycle
from worker.launch import training_launch

# A stand-in training child for torchrun: watches its supervisor, writes its pid, then waits.
RANK = """
import os, sys, time
from pathlib import Path
from worker.child_lifecycle import exit_with_parent
exit_with_parent()
Path(sys.argv[1], f"rank{os.environ['RANK']}.pid").write_text(str(os.getpid()))
time.sleep(300)
"""

# A stand-in supervisor: launches 2 ranks of RANK under torchrun, prints torchrun's pid, waits.
SUPERVISOR = """
import subprocess, sys
from pathlib import Path
from safetune.config import Settings
from worker import child_lifecycle
from worker.launch import training_launch
out = Path(sys.argv[1])
launch = training_launch(Settings(processes_per_job=2), out)
argv = launch.argv[: launch.argv.index("-m", 3)] + [str(out / "rank.py"), str(out)]
child = child_lifecycle.spawn(argv, stdout=subprocess.DEVNULL, stderr_path=out / "stderr.log", env=launch.env)
print(child.pid, flush=True)
child.wait()
"""


def test_one_process_by_default_and_torchrun_for_several(tmp_path: Path) -> None:
    single = training_launch(Settings(), tmp_path)
    assert single.world_size == 1 and single.argv[1:] == ["-m", "worker.training_process", str(tmp_path)]
    assert single.env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")  # untouched
    multi = training_launch(Settings(gpus="2,3"), tmp_path)  # one rank per listed GPU
    assert multi.world_size == 2 and multi.env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert multi.argv[1:7] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc_per_node",
    ]
    assert multi.argv[7] == "2"
    assert multi.argv[-2:] == ["worker.training_process", str(tmp_path)]
    assert training_launch(Settings(processes_per_job=3), tmp_path).argv[7] == "3"
    with pytest.raises(ValidationError, match="exceeds the 2 GPUs"):
        Settings(gpus="0,1", processes_per_job=4)


def _rank_pids(folder: Path, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = sorted(folder.glob("rank*.pid"))
        if len(files) == 2 and all(f.read_text() for f in files):
            return [int(f.read_text()) for f in files]
        time.sleep(0.2)
    raise AssertionError(f"ranks did not start: {(folder / 'stderr.log').read_text(errors='replace')}")


def test_stop_and_supervisor_death_take_every_torchrun_rank(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    (tmp_path / "rank.py").write_text(RANK)
    # 1. The supervisor's stop(): TERM/KILL of torchrun's group; the ranks (own sessions) follow it.
    launch = training_launch(Settings(processes_per_job=2), tmp_path)
    argv = launch.argv[: launch.argv.index("-m", 3)] + [str(tmp_path / "rank.py"), str(tmp_path)]
    child = child_lifecycle.spawn(
        argv, stdout=subprocess.DEVNULL, stderr_path=tmp_path / "stderr.log", env={**launch.env, **env}
    )
    ranks = _rank_pids(tmp_path)
    child_lifecycle.stop(child, grace_seconds=1.0)
    assert all(gone(pid, within=15) for pid in ranks), "a rank outlived stop()"
    for f in tmp_path.glob("rank*.pid"):
        f.unlink()
    # 2. kill -9 of the supervisor: no stop() at all; the ranks take torchrun and themselves down.
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo,
        env=env,
    )
    try:
        assert supervisor.stdout is not None
        torchrun = int(supervisor.stdout.readline())
        ranks = _rank_pids(tmp_path)
        supervisor.kill()
        supervisor.wait(timeout=10)
        assert all(gone(pid, within=15) for pid in ranks), "an orphaned rank kept running"
        assert gone(torchrun, within=15), "torchrun outlived its supervisor"
    finally:
        supervisor.kill()
