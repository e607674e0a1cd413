"""Progress of a long operation: done/total, rate and ETA, for a log line or a job's events.

One small helper for every long loop (evaluation, alignment, model conversion, the benches), so they
all report the same way: ``ProgressMeter`` keeps the arithmetic (rate over the elapsed time, ETA
from the work left), and ``print_progress`` turns a meter into a throttled one-line printer. The
generator's ``progress`` callback (done, total) plugs straight into either.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class ProgressMeter:
    """Rate and ETA of one operation from the (done, total) updates it reports."""

    label: str = field(default="", metadata={"help": "what is being counted, e.g. 'prompts'"})
    clock: Callable[[], float] = field(default=time.monotonic, metadata={"help": "seconds; tests inject"})
    started: float | None = None
    done: int = 0
    total: int = 0

    def update(self, done: int, total: int) -> None:
        """Record that ``done`` of ``total`` units are finished."""
        if done < 0 or total < 0 or done > total:
            raise ValueError(f"ProgressMeter.update needs 0 <= done <= total, got {done}/{total}")
        if self.started is None:
            self.started = self.clock()
        self.done, self.total = done, total

    def start(self) -> None:
        """Start the clock now (before the first unit finishes), so the first rate is honest."""
        self.started = self.clock()

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started is None else max(0.0, self.clock() - self.started)

    @property
    def rate(self) -> float | None:
        """Units per second so far; None before any unit has finished."""
        elapsed = self.elapsed
        return self.done / elapsed if self.done and elapsed > 0 else None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far; 0 when finished, None while there is no rate yet."""
        if self.total and self.done >= self.total:
            return 0.0
        rate = self.rate
        return None if rate is None else (self.total - self.done) / rate

    def to_dict(self) -> dict[str, Any]:
        eta = self.eta_s
        return {"done": self.done, "total": self.total, "eta_s": None if eta is None else round(eta, 1)}

    def line(self) -> str:
        """``label 12/50  3.1/s  ETA 0:12``."""
        rate, eta = self.rate, self.eta_s
        parts = [f"{self.label} {self.done}/{self.total}".strip()]
        parts.append("-/s" if rate is None else f"{rate:.2f}/s")
        parts.append("ETA -" if eta is None else f"ETA {format_seconds(eta)}")
        return "  ".join(parts)


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``1:15``; hours when needed (``1:02:03``)."""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def print_progress(
    label: str,
    *,
    every_s: float = 5.0,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[int, int], None]:
    """A (done, total) callback that prints the meter's line at most every ``every_s`` seconds.

    The last update (done == total) always prints, so a finished loop ends on its final rate.
    """
    meter = ProgressMeter(label, clock=clock)
    meter.start()
    last_printed = [-float("inf")]

    def report(done: int, total: int) -> None:
        meter.update(done, total)
        now = clock()
        if done >= total or now - last_printed[0] >= every_s:
            last_printed[0] = now
            print(meter.line(), file=stream or sys.stderr, flush=True)  # noqa: T201

    return report
