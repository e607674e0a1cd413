"""worker.child_lifecycle with real processes: a group is stopped whole; a child dies with its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from worker import child_lifecycle

# Ignores SIGTERM and starts a grandchild in its group, then prints the grandchild's pid.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print(grandchild.pid, flush=True)
time.sleep(300)
"""

# A stand-in supervisor: spawns a child that runs exit_with_parent(), prints its pid, then waits.
SUPERVISOR = """
import subprocess, sys
from pathlib import Path
from worker import child_lifecycle
child = child_lifecycle.spawn(
    [sys.executable, "-c", "import time; from worker.child_lifecycle import exit_with_parent; "
     "exit_with_parent(); print('watching', flush=True); time.sleep(300)"],
    stdout=subprocess.PIPE, stderr_path=Path(sys.argv[1]), env=dict(__import__("os").environ),
)
assert child.stdout is not None and child.stdout.readline().strip() == "watching"
print(child.pid, flush=True)
child.wait()
"""


def gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_stop_kills_a_child_that_ignores_term_and_everything_it_started(tmp_path: Path) -> None:
    child = child_lifecycle.spawn(
        [sys.executable, "-c", STUBBORN],
        stdout=subprocess.PIPE,
        stderr_path=tmp_path / "stderr.log",
        env=dict(os.environ),
    )
    assert child.stdout is not None
    grandchild = int(child.stdout.readline())
    assert os.getpgid(child.pid) == child.pid != os.getpgid(0)  # its own group, not ours

    started = time.monotonic()
    child_lifecycle.stop(child, grace_seconds=1.0)
    assert child.returncode == -signal.SIGKILL  # TERM was ignored, so the KILL did it
    assert time.monotonic() - started < 10
    assert gone(grandchild, within=5)
    child_lifecycle.stop(child, grace_seconds=1.0)  # a second stop of a reaped child is harmless


def test_child_kills_itself_when_its_supervisor_is_killed(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(tmp_path / "stderr.log")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    try:
        assert supervisor.stdout is not None
        child = int(supervisor.stdout.readline())
        assert psutil.pid_exists(child)
        supervisor.kill()  # SIGKILL: no finally, no cleanup in the supervisor
        supervisor.wait(timeout=10)
        assert gone(child, within=10), "the orphaned child kept running"
    finally:
        supervisor.kill()
