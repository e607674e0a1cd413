"""The embedded default's queue: one in-process thread runs jobs through the same run_job as Celery.

`start()` registers `submit` with `safetune.queue` (which never names this package), so that
`enqueue_training` hands job ids here when no broker is configured: the demo and a single-machine
install need only SQLite. It also runs the reaper and the webhook dispatcher, as a Celery worker
does. Jobs still train in a child process. Whoever hosts the API in embedded mode calls `start()`
once at start-up (`cli.embedded_app`, `safetune demo`).
"""

from __future__ import annotations

import logging
import threading
from queue import Queue

from safetune import queue
from safetune.base_models import registry
from safetune.config import get_settings
from worker.pipeline import run_job
from worker.reaper import start_background_reaper
from worker.webhook_dispatcher import start_dispatcher

log = logging.getLogger("safetune.embedded")

_jobs: Queue[str] = Queue()
_lock = threading.Lock()
_started = False


def _run_forever() -> None:
    while True:
        job_id = _jobs.get()
        try:
            run_job(job_id)
        except Exception:  # run_job records failures itself; this only guards the thread
            log.exception("embedded runner failed on %s", job_id)


def start() -> None:
    """Start the runner thread and the reaper, and register with the queue. Idempotent."""
    global _started
    with _lock:
        if _started:
            return
        # Fail closed like a Celery worker does at start-up (worker.signals): a bad entry stops here.
        if any(info.entry is not None for info in registry().values()):
            from worker.job_model import check_registered_models  # loads transformers

            check_registered_models()
        threading.Thread(target=_run_forever, name="safetune-embedded-worker", daemon=True).start()
        settings = get_settings()
        start_background_reaper(max(5.0, settings.heartbeat_seconds * 2))
        start_dispatcher(settings.webhook_poll_seconds)
        queue.register_local_runner(submit)
        _started = True


def submit(job_id: str) -> None:
    _jobs.put(job_id)
