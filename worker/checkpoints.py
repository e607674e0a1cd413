"""Store the training child's checkpoints in the database, within the storage limits.

A checkpoint is skipped (the child keeps training; a resume starts from the previous one) when it
comes sooner than `checkpoint_min_interval_seconds` after the last one stored by this supervisor,
or when the tenant has no room left under its storage quota. A stored one prunes the job to its
newest `checkpoint_keep_last` plus the best by validation loss (safetune.repositories.storage).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from safetune.config import get_settings
from safetune.db import session_scope
from safetune.repositories import job_runs, storage
from worker.archives import sha256_hex, zip_adapter, zip_dir
from worker.child_protocol import CheckpointEvent

log = logging.getLogger("safetune.worker")


class CheckpointStore:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.settings = get_settings()
        self.last_stored: float | None = None  # time.monotonic() of this supervisor's last stored one

    def _too_soon(self) -> bool:
        interval = self.settings.checkpoint_min_interval_seconds
        return self.last_stored is not None and time.monotonic() - self.last_stored < interval

    def store(self, event: CheckpointEvent) -> None:
        step = event.step
        if self._too_soon():
            log.info("checkpoint skipped: minimum interval", extra={"job_id": self.job_id, "step": step})
            return
        folder = Path(event.path)
        adapter_dir = folder / "adapter" if (folder / "adapter").is_dir() else folder
        adapter_zip = zip_adapter(adapter_dir)
        state_zip = zip_dir(folder)
        with session_scope() as session:
            needed = len(adapter_zip) + len(state_zip)
            if not storage.job_tenant_has_room(session, self.job_id, self.settings, needed):
                job_runs.add_event(
                    session,
                    self.job_id,
                    "checkpoint_skipped",
                    f"checkpoint at step {step} not stored: the storage quota is full",
                    data={"step": step, "reason": "storage_quota_exceeded", "bytes": needed},
                    level="warning",
                )
                return
            job_runs.save_checkpoint(
                session,
                self.job_id,
                step=step,
                train_loss=event.train_loss,
                val_loss=event.val_loss,
                adapter_zip=adapter_zip,
                state_zip=state_zip,
                sha256=sha256_hex(adapter_zip),
                retention=storage.CheckpointRetention.from_settings(self.settings),
            )
        self.last_stored = time.monotonic()
