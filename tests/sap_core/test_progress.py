"""sap_core.progress: rate and ETA from (done, total) updates, and the throttled printer."""

from __future__ import annotations

import io

import pytest

from sap_core.progress import ProgressMeter, format_seconds, print_progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_and_eta_follow_the_work_done() -> None:
    clock = Clock()
    meter = ProgressMeter("prompts", clock=clock)
    meter.start()
    assert meter.rate is None and meter.eta_s is None  # nothing finished yet: no guess
    clock.now += 10
    meter.update(20, 100)
    assert meter.rate == pytest.approx(2.0)
    assert meter.eta_s == pytest.approx(40.0)
    assert meter.to_dict() == {"done": 20, "total": 100, "eta_s": 40.0}
    assert meter.line() == "prompts 20/100  2.00/s  ETA 0:40"
    meter.update(100, 100)
    assert meter.eta_s == 0.0


def test_bad_updates_are_refused() -> None:
    with pytest.raises(ValueError, match="done <= total"):
        ProgressMeter().update(5, 4)


def test_format_seconds() -> None:
    assert format_seconds(75.2) == "1:15"
    assert format_seconds(3723) == "1:02:03"


def test_printer_is_throttled_but_always_prints_the_end() -> None:
    clock, out = Clock(), io.StringIO()
    report = print_progress("steps", every_s=5.0, stream=out, clock=clock)
    for done in range(1, 10):
        clock.now += 1
        report(done, 10)
    clock.now += 1
    report(10, 10)
    lines = out.getvalue().splitlines()
    # The first update prints, then one every 5 s, and the final one regardless.
    assert [line.split()[1] for line in lines] == ["1/10", "6/10", "10/10"]
    assert lines[-1].endswith("ETA 0:00")
