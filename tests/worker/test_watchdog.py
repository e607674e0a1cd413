"""StepWatchdog on a hand-driven clock: quiet outside training, a deadline of N x the typical step."""

from __future__ import annotations

from worker.watchdog import StepWatchdog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_deadline_follows_the_step_time_with_a_floor() -> None:
    clock = Clock()
    dog = StepWatchdog(factor=5, min_seconds=30, clock=clock)
    clock.now += 10_000
    assert dog.overdue() is None  # loading a model takes what it takes: not watched

    dog.training(True)
    clock.now += 29
    assert dog.overdue() is None  # before the first step only the floor applies
    dog.progress(step=True)
    for _ in range(5):
        clock.now += 20
        dog.progress(step=True)
    assert dog.limit_seconds() == 100  # 5 x 20 s per step
    clock.now += 99
    assert dog.overdue() is None
    clock.now += 2
    reason = dog.overdue()
    assert reason is not None and "no progress for 101 s" in reason and "20.0 s per step" in reason

    dog.progress(step=False)  # a checkpoint also counts as progress
    assert dog.overdue() is None
    dog.training(False)  # evaluation after training is not watched
    clock.now += 10_000
    assert dog.overdue() is None


def test_fast_steps_still_get_the_floor() -> None:
    clock = Clock()
    dog = StepWatchdog(factor=10, min_seconds=60, clock=clock)
    dog.training(True)
    for _ in range(3):
        clock.now += 0.1
        dog.progress(step=True)
    clock.now += 59
    assert dog.overdue() is None
    clock.now += 2
    assert dog.overdue() is not None
