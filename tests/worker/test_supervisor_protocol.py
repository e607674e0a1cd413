"""A child that breaks the protocol fails its job with a clear error through the real supervisor
(run_job against real Postgres), and is stopped: the supervisor never guesses a default.

The child here is a stand-in launched the way `worker.launch` launches the real one (another
launcher may replace it): it prints the given lines on stdout, then waits to be stopped (or exits at
a line "EXIT"), so the tests take seconds and show that the supervisor, not the child's exit, ends
the run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.worker.test_supervisor import load, run, spec
from worker import supervisor
from worker.launch import Launch

CHILD = """
import os, sys, time
from pathlib import Path
Path(sys.argv[1]).write_text(str(os.getpid()))
for line in Path(sys.argv[2]).read_text().splitlines():
    if line == "EXIT":
        sys.exit(1)
    print(line, flush=True)
time.sleep(600)
"""
STAGE = '{"event": "stage", "stage": "training"}'
PLAN = '{"event": "plan", "total_steps": 3, "num_examples": 3, "world_size": 1}'


@pytest.fixture()
def scripted_child(
    supervised: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[list[str]], Path]:
    """scripted_child(lines) -> the file where the child writes its pid."""

    def configure(lines: list[str]) -> Path:
        supervised()
        script, pid_file, output = tmp_path / "child.py", tmp_path / "child.pid", tmp_path / "lines.txt"
        script.write_text(CHILD)
        output.write_text("\n".join(lines) + "\n")

        def launch(settings: object, job_dir: Path) -> Launch:
            argv = [sys.executable, str(script), str(pid_file), str(output), str(job_dir)]
            return Launch(argv, {"PATH": "/usr/bin:/bin"}, 1)

        monkeypatch.setattr(supervisor, "training_launch", launch)
        return pid_file

    return configure


def assert_stopped(pid_file: Path) -> None:
    pid = int(pid_file.read_text())
    try:
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        pass


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        (
            '{"event": "step", "step": 1, "total_steps": 3, "lr": 0.1, "tokens_per_second": 5.0, '
            '"elapsed_seconds": 1.0}',
            "step event: missing field(s) loss",
        ),
        ('{"event": "progress", "step": 1}', "unknown event kind 'progress'"),
        (
            '{"event": "checkpoint", "step": NaN, "path": "/x", "train_loss": 1.0, "val_loss": null}',
            "checkpoint event.step must be int, got null (non-finite numbers arrive as null)",
        ),
        ('{"event": "done", "adapter_dir": "/x"}', "done event: missing field(s) report_path"),
    ],
)
def test_a_malformed_event_fails_the_job_with_a_protocol_error_and_stops_the_child(
    make_job: Callable[..., str], scripted_child: Callable[[list[str]], Path], bad_line: str, problem: str
) -> None:
    pid_file = scripted_child([STAGE, PLAN, bad_line])
    job_id = make_job(spec=spec(3))
    run(job_id, timeout=60)

    job = load(job_id)
    assert (job.status, job.error_code) == ("failed", "internal_error"), job.error_message
    assert (job.error_message or "").startswith(f"the training process broke the child protocol: {problem}")
    assert job.total_steps == 3  # the valid events before it were relayed
    assert_stopped(pid_file)


def test_a_non_finite_loss_from_any_launcher_fails_the_job_as_diverged(
    make_job: Callable[..., str], scripted_child: Callable[[list[str]], Path]
) -> None:
    step = (
        '{"event": "step", "step": 1, "total_steps": 3, "loss": %s, "lr": 0.1, '
        '"tokens_per_second": 5.0, "elapsed_seconds": 1.0}'
    )
    pid_file = scripted_child(
        [STAGE, PLAN, step % "1.5", step.replace('"step": 1', '"step": 2') % "Infinity"]
    )
    job_id = make_job(spec=spec(3))
    run(job_id, timeout=60)

    job = load(job_id)
    assert (job.status, job.error_code) == ("failed", "training_diverged"), job.error_message
    assert "diverged at step 2" in (job.error_message or "")
    assert_stopped(pid_file)


def test_stray_output_that_is_not_an_event_is_skipped(
    make_job: Callable[..., str], scripted_child: Callable[[list[str]], Path]
) -> None:
    error = '{"event": "error", "code": "dataset_harmful", "message": "too harmful"}'
    pid_file = scripted_child([STAGE, "loading weights ...", "[1, 2]", PLAN, error, "EXIT"])
    job_id = make_job(spec=spec(3))
    run(job_id, timeout=60)

    job = load(job_id)
    assert (job.status, job.error_code, job.error_message) == ("failed", "dataset_harmful", "too harmful")
    assert job.total_steps == 3
    assert_stopped(pid_file)
