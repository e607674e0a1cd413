"""A process-wide flag: the worker is shutting down, so running jobs checkpoint and go back in the queue."""

from __future__ import annotations

import threading

_requested = threading.Event()


def request() -> None:
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def clear() -> None:
    _requested.clear()
