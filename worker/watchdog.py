"""Notice a training child that is alive but no longer training (a hung kernel, a deadlock, a stuck read).

A dead child closes its stdout and the supervisor sees that at once; a hung one just goes quiet. While
the child is in its training stage, every step (or validation/checkpoint) event re-arms a deadline of
`factor` times the typical step time seen so far, never less than `min_seconds`; that floor is also
the allowance before the first step.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Weight of the newest interval in the running step time: smooths a slow validation or checkpoint
# step without letting one outlier stretch the deadline for the rest of the run.
SMOOTHING = 0.2


class StepWatchdog:
    def __init__(
        self, factor: float, min_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.factor = factor
        self.min_seconds = min_seconds
        self.clock = clock
        self.step_seconds: float | None = None
        self.last_step: float | None = None
        self.last_progress: float | None = None  # None: not in the training stage

    def training(self, active: bool) -> None:
        """The child entered (True) or left (False) its training stage."""
        self.last_progress = self.clock() if active else None
        self.last_step = None

    def progress(self, *, step: bool) -> None:
        """A step, validation or checkpoint event arrived."""
        if self.last_progress is None:
            return
        now = self.clock()
        if step:
            # The time to the first step includes set-up (probe fitting, warm-up), so it is not a step.
            if self.last_step is not None:
                interval = now - self.last_step
                previous = interval if self.step_seconds is None else self.step_seconds
                self.step_seconds = (1 - SMOOTHING) * previous + SMOOTHING * interval
            self.last_step = now
        self.last_progress = now

    def limit_seconds(self) -> float:
        expected = self.factor * self.step_seconds if self.step_seconds is not None else 0.0
        return max(self.min_seconds, expected)

    def overdue(self) -> str | None:
        """Why the child counts as stalled, or None while it is on time (or not training)."""
        if self.last_progress is None:
            return None
        silent = self.clock() - self.last_progress
        if silent <= self.limit_seconds():
            return None
        typical = f"{self.step_seconds:.1f} s per step" if self.step_seconds is not None else "no step yet"
        return f"training made no progress for {silent:.0f} s (limit {self.limit_seconds():.0f} s; {typical})"
