"""The Celery application. Run: `celery -A worker.celery_app worker --concurrency=1 -Q training`."""

from __future__ import annotations

from celery import Celery

from safetune.config import get_settings
from safetune.logging_setup import configure_logging
from safetune.queue import TRAINING_QUEUE

settings = get_settings()
configure_logging()  # JSON lines; worker_hijack_root_logger=False keeps Celery off the root logger

celery_app = Celery("safetune", broker=settings.broker_url or "memory://", include=["worker.tasks"])
celery_app.conf.update(
    # Long GPU jobs: acknowledge after the work, one message at a time per process, and give the
    # message back if the process dies, so a lost worker's job is redelivered (the claim makes the
    # redelivery harmless when the job already finished or runs elsewhere).
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_default_queue=TRAINING_QUEUE,
    broker_connection_retry_on_startup=True,
    # Redis redelivers unacked messages after this long; jobs are longer than Celery's 1 h default,
    # and the conditional claim protects against a second delivery of a job still running.
    broker_transport_options={"visibility_timeout": 6 * 3600},
    worker_hijack_root_logger=False,
    # No beat schedule: each worker reaps from a thread of its main process (worker.signals), since a
    # periodic task would wait in the training queue behind hours-long jobs, and needs a beat process.
)

import worker.signals  # noqa: E402,F401  (connects process signals for this app)

app = celery_app
