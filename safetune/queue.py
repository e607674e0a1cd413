"""Enqueue training after the job row is committed: Celery by task name, or the in-process runner.

Neither the API nor this package imports the worker: with a broker the task is sent *by name* (so
the web tier does not load torch); in the embedded default the id goes to whatever in-process runner
registered itself with :func:`register_local_runner` at start-up (`worker.embedded.start()`, which
`safetune serve` and `safetune demo` call in embedded mode).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from safetune.config import get_settings

TRAIN_TASK = "safetune.train_job"
TRAINING_QUEUE = "training"

log = logging.getLogger(__name__)

LocalRunner = Callable[[str], None]
_local_runner: LocalRunner | None = None
_runner_lock = threading.Lock()


def register_local_runner(runner: LocalRunner | None) -> None:
    """Install the in-process runner that embedded mode hands job ids to (None removes it)."""
    global _local_runner
    with _runner_lock:
        _local_runner = runner


@lru_cache
def _celery_client(broker_url: str) -> Any:
    # Keyed by URL: a changed setting (tests, a reconfigured process) gets its own client.
    from celery import Celery

    return Celery("safetune-client", broker=broker_url, set_as_current=False)


def enqueue_training(job_id: str) -> None:
    """Hand a committed job to the workers. Losing the message is survivable: the reaper re-sends.

    Never called in a loop for one job: a job whose tenant is busy waits parked, without a message
    (safetune.repositories.job_queue), until the reaper sees a free slot.
    """
    settings = get_settings()
    if settings.embedded:
        with _runner_lock:
            runner = _local_runner
        if runner is None:
            # The row is committed; a runner started later (or the reaper's re-send) picks it up.
            log.error(
                "embedded mode but no in-process runner registered; job %s stays queued "
                "(start the API with `safetune serve`, or configure SAFETUNE_BROKER_URL)",
                job_id,
            )
            return
        runner(job_id)
        return
    try:
        _celery_client(settings.broker_url).send_task(TRAIN_TASK, args=[job_id], queue=TRAINING_QUEUE)
    except Exception as exc:  # kombu raises OperationalError and friends
        # The job row is committed and durable; failing the request now would invite a duplicate
        # submission. The reaper re-sends queued jobs that no worker picked up.
        log.warning("enqueue failed for %s: %s (the reaper will re-send it)", job_id, exc)
