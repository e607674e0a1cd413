"""A process-wide flag: the worker is shutting down, so running jobs checkpoint and go back in the queue.

Celery's `worker_shutting_down` signal fires in the worker's *main* process, but with the prefork
pool `run_job` runs in a forked pool process, which never sees an in-memory flag set in its parent
(and SIGTERM is sent to the main process only, by `docker stop` and by systemd). So the main
process also drops a marker file named after its pid, and a pool process checks for its parent's.
"""

from __future__ import annotations

import atexit
import os
import tempfile
import threading
from pathlib import Path

_requested = threading.Event()


def _marker(pid: int) -> Path:
    return Path(tempfile.gettempdir()) / f"safetune-worker-shutdown-{pid}"


def _remove_own_marker() -> None:
    _marker(os.getpid()).unlink(missing_ok=True)


def request() -> None:
    _requested.set()
    try:
        _marker(os.getpid()).touch()
        atexit.register(_remove_own_marker)
    except OSError:  # the in-process flag still covers the solo pool and the embedded runner
        pass


def requested() -> bool:
    if _requested.is_set():
        return True
    parent = os.getppid()
    return parent > 1 and _marker(parent).exists()


def clear() -> None:
    """Forget a shutdown request (and a marker a previous process with this pid may have left)."""
    _requested.clear()
    _remove_own_marker()
