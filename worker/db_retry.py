"""Retry a worker's database write through a brief Postgres outage instead of losing the job.

Only connection-level failures are retried (the unit of work rolled back, so running it again is
safe: every job transition is a conditional UPDATE). Anything else is a bug and propagates at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

T = TypeVar("T")
log = logging.getLogger("safetune.worker")


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def with_db_retry(
    write: Callable[[], T],
    *,
    what: str,
    attempts: int = 8,
    first_delay: float = 0.5,
    max_delay: float = 15.0,
    deadline: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `write` (one whole unit of work), retrying transient DB failures with exponential backoff.

    The default schedule waits about 45 s in total: longer than a Postgres restart or fail-over,
    shorter than the reaper's stale cut-off, so a job is never reaped while its result is pending.
    `deadline` (time.monotonic()) ends the retries sooner: a supervisor whose heartbeat lease runs
    out must stop its child rather than keep waiting for the database.
    """
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return write()
        except DBAPIError as exc:
            out_of_time = deadline is not None and time.monotonic() + delay > deadline
            if not is_transient(exc) or attempt == attempts or out_of_time:
                raise
            log.warning("database unavailable during %s (attempt %d/%d); retrying", what, attempt, attempts)
            sleep(delay)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")
