"""Start and stop the training child as a process group, and make the child die with its supervisor.

The child leads its own process group, so stopping it reaches anything it started as well (and a
Ctrl-C or a signal meant for the worker's group does not kill it behind the supervisor's back: the
supervisor stops it). If the supervisor dies without stopping it (kill -9, OOM killer), nobody else
would: the child watches its parent and kills its own group when the parent is gone, so a dead worker
never leaves a trainer holding a GPU.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("safetune.worker")

SUPERVISOR_PID_ENV = "SAFETUNE_SUPERVISOR_PID"
PARENT_POLL_SECONDS = 1.0
# The supervisor asks the child to stop (cancel, shutdown) by creating this file in the job folder;
# the child looks for it between steps, checkpoints and exits.
STOP_FILE = "STOP"
LAUNCHER_ENV = "TORCHELASTIC_RUN_ID"  # set by torchrun in every rank it starts


def spawn(
    argv: Sequence[str], *, stdout: int, stderr_path: Path, env: dict[str, str]
) -> subprocess.Popen[str]:
    """Start `argv` as the leader of a new process group, told which pid supervises it."""
    with stderr_path.open("wb") as stderr:
        return subprocess.Popen(
            list(argv),
            stdout=stdout,
            stderr=stderr,
            text=True,
            env={**env, SUPERVISOR_PID_ENV: str(os.getpid())},
            process_group=0,
        )


def _signal_group(child: subprocess.Popen[str], sig: signal.Signals) -> None:
    try:
        os.killpg(child.pid, sig)
    except ProcessLookupError:  # the whole group is already gone
        pass


def stop(child: subprocess.Popen[str], grace_seconds: float) -> None:
    """TERM the child's process group, wait up to `grace_seconds`, then KILL the group and reap.

    Safe to call on a child that already exited: a reaped child's group is left alone, because its
    pid (and so the group id) may belong to another process by now.
    """
    if child.poll() is not None:
        return
    _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    # KILL the group even when the leader obeyed TERM: processes it started may not have. The leader
    # was reaped a moment ago at most, far too soon for its pid to be handed out again.
    _signal_group(child, signal.SIGKILL)
    child.wait()
    log.info("training process %d stopped (exit code %s)", child.pid, child.returncode)


def exit_with_parent() -> None:
    """In the child: kill our own process group as soon as the supervising process is gone.

    Polls instead of using prctl(PR_SET_PDEATHSIG): that fires when the parent *thread* that
    forked us exits, and the supervisor may run in a thread of a longer-lived process. Under
    torchrun (a multi-rank job) our parent is torchrun and the supervisor is its parent: a rank
    then also leaves when torchrun is reparented (the supervisor died), and takes torchrun with it,
    since nobody else would stop it.
    """
    expected = os.environ.get(SUPERVISOR_PID_ENV)
    if not expected:
        return  # started by hand, not by a supervisor
    supervisor = int(expected)
    launcher = os.getppid()
    under_torchrun = LAUNCHER_ENV in os.environ and launcher != supervisor

    def supervised() -> bool:
        if os.getppid() != launcher:
            return False
        return not under_torchrun or _parent_of(launcher) == supervisor

    def watch() -> None:
        while supervised():
            time.sleep(PARENT_POLL_SECONDS)
        if under_torchrun and os.getppid() == launcher and launcher > 1:
            os.kill(launcher, signal.SIGKILL)  # still our parent, so the pid is still torchrun's
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _parent_of(pid: int) -> int | None:
    """The parent pid of `pid` (Linux /proc), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; the fields after it do not.
    return int(stat.rsplit(")", 1)[1].split()[1])
