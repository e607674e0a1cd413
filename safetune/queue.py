"""Enqueue training after the job row is committed: Celery by task name, or the in-process runner.

The API never imports the worker package: with a broker it sends the task *by name* (so the web tier
does not load torch); in the embedded default it hands the id to the in-process runner that
`worker.embedded` registers at start-up.
"""

from __future__ import annotations

import importlib
import logging
from functools import lru_cache
from typing import Any

from safetune.config import get_settings

TRAIN_TASK = "safetune.train_job"
REAP_TASK = "safetune.reap_stale_jobs"
TRAINING_QUEUE = "training"

log = logging.getLogger(__name__)


@lru_cache
def _celery_client() -> Any:
    from celery import Celery

    settings = get_settings()
    return Celery("safetune-client", broker=settings.broker_url, set_as_current=False)


def enqueue_training(job_id: str) -> None:
    """Hand a committed job to the workers. Losing the message is survivable: the reaper re-sends.

    Never called in a loop for one job: a job whose tenant is busy waits parked, without a message
    (safetune.repositories.job_queue), until the reaper sees a free slot.
    """
    settings = get_settings()
    if settings.embedded:
        # Imported by name so that the api package keeps no static dependency on the ML stack.
        importlib.import_module("worker.embedded").submit(job_id)
        return
    try:
        _celery_client().send_task(TRAIN_TASK, args=[job_id], queue=TRAINING_QUEUE)
    except Exception as exc:  # kombu raises OperationalError and friends
        # The job row is committed and durable; failing the request now would invite a duplicate
        # submission. The reaper re-sends queued jobs that no worker picked up.
        log.warning("enqueue failed for %s: %s (the reaper will re-send it)", job_id, exc)


def reset_client() -> None:
    _celery_client.cache_clear()
