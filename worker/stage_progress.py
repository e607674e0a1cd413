"""The training child's progress through a long stage, as throttled `stage_progress` events.

The evaluating stage answers every prompt of the evaluation in one engine call (the base model where
the cache has no entry, then the tuned model; the shipped sets and the user's): the engine reports
(answered, requests) through its `progress` callback, and this turns that into one count and one ETA
for the whole stage (worker.progress writes them to the job row and its events).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sap_core.progress import ProgressMeter
from worker.child_protocol import Event, Stage, StageProgressEvent

Emit = Callable[[Event], None]


class StageProgress:
    """Counts one stage's units and emits at most one event every `every_s` (and always the last)."""

    def __init__(
        self,
        emit: Emit,
        stage: Stage,
        total: int,
        *,
        unit: str = "prompts",
        every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emit = emit
        self.stage: Stage = stage
        self.unit = unit
        self.every_s = every_s
        self.clock = clock
        self.meter = ProgressMeter(unit, clock=clock)
        self.meter.start()
        self.total = total
        self.last_emit = -float("inf")

    def begin(self) -> None:
        """Announce 0/total, so the stage shows its size before the first batch finishes."""
        self._emit(0, force=True)

    def update(self, done: int, _total: int | None = None) -> None:
        """The engine's callback: `done` units of this stage are finished (its own total ignored:
        the stage's is the one shown)."""
        self._emit(done, force=False)

    def _emit(self, done: int, *, force: bool) -> None:
        done = min(done, self.total)
        self.meter.update(done, self.total)
        now = self.clock()
        if not force and done < self.total and now - self.last_emit < self.every_s:
            return
        self.last_emit = now
        eta = self.meter.to_dict()["eta_s"]
        self.emit(
            StageProgressEvent(stage=self.stage, unit=self.unit, done=done, total=self.total, eta_s=eta)
        )
