"""Process hooks: a forked child must not reuse the parent's DB connections; shutdown stops jobs cleanly."""

from __future__ import annotations

import os
import sys
from typing import Any

from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutting_down

from safetune.base_models import registry
from safetune.config import get_settings
from safetune.db import reset_engine
from safetune.models_file import ModelsFileError
from worker import shutdown
from worker.reaper import start_background_reaper
from worker.webhook_dispatcher import start_dispatcher


@worker_init.connect
def _check_registered_models(**_: Any) -> None:
    # Fail closed before taking jobs: a models-file entry that cannot train stops the worker here,
    # with a message naming the entry and field, instead of failing every job that names it.
    # Celery logs and swallows an Exception from a signal handler, and a SystemExit raised this early
    # leaves the process hanging, so a bad entry ends the process here (78 = EX_CONFIG).
    # Without models-file entries there is nothing to load, and transformers stays out of this process.
    try:
        if any(info.entry is not None for info in registry().values()):
            from worker.job_model import check_registered_models  # loads transformers

            check_registered_models()
    except ModelsFileError as exc:
        print(f"safetune worker refuses to start: {exc}", file=sys.stderr, flush=True)
        os._exit(78)


@worker_process_init.connect
def _fresh_engine_after_fork(**_: Any) -> None:
    reset_engine()


@worker_shutting_down.connect
def _request_graceful_stop(**_: Any) -> None:
    shutdown.request()


@worker_ready.connect
def _start_background_threads(**_: Any) -> None:
    shutdown.clear()  # a marker left by an earlier process that had this pid must not stop our jobs
    # Every worker reaps and sends webhooks in its main process: a periodic task would wait in the
    # training queue behind hours-long jobs.
    settings = get_settings()
    start_background_reaper(max(5.0, settings.heartbeat_seconds * 2))
    start_dispatcher(settings.webhook_poll_seconds)
