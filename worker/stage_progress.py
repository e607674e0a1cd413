"""The training child's progress through a long stage, as throttled `stage_progress` events.

The evaluating stage runs several evaluations one after another (the base model unless cached, then
the tuned model; the shipped sets, then the user's): each reports (set, done, set size) through
sap_core's `progress` callback. This adds them up against the stage's total so the job shows one
count and one ETA for the whole stage (worker.progress writes them to the job row and its events).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sap_core.progress import ProgressMeter

Emit = Callable[..., None]


class StageProgress:
    """Counts one stage's units across its passes and emits at most one event every `every_s`."""

    def __init__(
        self,
        emit: Emit,
        stage: str,
        total: int,
        *,
        unit: str = "prompts",
        every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emit = emit
        self.stage = stage
        self.unit = unit
        self.every_s = every_s
        self.clock = clock
        self.meter = ProgressMeter(unit, clock=clock)
        self.meter.start()
        self.total = total
        self.done_by_part: dict[tuple[str, str], int] = {}
        self.last_emit = -float("inf")

    def begin(self) -> None:
        """Announce 0/total, so the stage shows its size before the first batch finishes."""
        self._emit(force=True)

    def part(self, name: str) -> Callable[[str, int, int], None]:
        """The callback for one evaluation pass: (prompt set, done in the set, set size)."""

        def report(set_name: str, done: int, _set_total: int) -> None:
            self.done_by_part[(name, set_name)] = done
            self._emit(force=False)

        return report

    def _emit(self, *, force: bool) -> None:
        done = min(sum(self.done_by_part.values()), self.total)
        self.meter.update(done, self.total)
        now = self.clock()
        if not force and done < self.total and now - self.last_emit < self.every_s:
            return
        self.last_emit = now
        payload: dict[str, Any] = {"stage": self.stage, "unit": self.unit, **self.meter.to_dict()}
        self.emit("stage_progress", **payload)
