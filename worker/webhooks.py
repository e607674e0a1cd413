"""Worker side of job webhooks: terminal transitions (safetune.repositories.job_runs._finish) queue
the event and safetune.webhooks sends it from a background thread after the commit. This module makes
the worker process wait briefly for those threads on shutdown, so a job that finished just before a
restart still gets its event (bounded: a dead receiver must not hold a shutdown for minutes)."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_shutdown, worker_shutdown

from safetune import webhooks

SHUTDOWN_WAIT_SECONDS = 10.0


@worker_process_shutdown.connect
@worker_shutdown.connect
def _drain_deliveries(**_kwargs: Any) -> None:
    webhooks.wait_for_deliveries(SHUTDOWN_WAIT_SECONDS)
