"""The worker side of job webhooks: a thread that drains the outbox (safetune.webhooks).

Every worker runs one in its main process, as it runs the reaper: the outbox claims keep several
dispatchers from sending one attempt twice, and nothing is lost when a worker stops, since the
events wait in Postgres for the next dispatcher.
"""

from __future__ import annotations

import logging
import threading

from safetune import webhooks

log = logging.getLogger("safetune.webhooks")


def start_dispatcher(poll_seconds: float, stop: threading.Event | None = None) -> threading.Thread:
    """Deliver due events until ``stop`` is set; idle, wake every ``poll_seconds`` (or on a commit in
    this process that queued an event)."""
    stop = stop or threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                busy = webhooks.deliver_due() > 0
            except Exception:  # a DB blip must not kill the dispatcher; the next round retries
                log.exception("webhook dispatch failed")
                busy = False
            if not busy:
                webhooks.wait_for_events(poll_seconds)

    thread = threading.Thread(target=loop, name="safetune-webhooks", daemon=True)
    thread.start()
    return thread
