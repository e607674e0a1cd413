"""Long-running processes: the API server, the Celery worker, and the one-off safety alignment.

Each one is exec'd / spawned as its own Python process so that this CLI never imports torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

WORKER_ARGV = ["-m", "celery", "-A", "worker.celery_app", "worker", "--concurrency=1", "-Q", "training"]


def _exec(argv: list[str]) -> None:
    """Replace this process, so signals (Ctrl-C, docker stop) reach the server directly."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *argv])


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Uvicorn worker processes.")] = 1,
) -> None:
    """Run the HTTP API (uvicorn api.main:app; with the in-process training runner when no broker is set)."""
    from safetune.config import get_settings

    app_path = "cli.embedded_app:app" if get_settings().embedded else "api.main:app"
    _exec(["-m", "uvicorn", app_path, "--host", host, "--port", str(port), "--workers", str(workers)])


def worker(
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run one training worker (one process per GPU; acks_late + prefetch 1 are in the app config)."""
    _exec([*WORKER_ARGV, f"--loglevel={loglevel}"])


def _model_cache() -> Path:
    from safetune.config import get_settings

    return get_settings().model_cache


def safety_align(
    from_scratch: Annotated[
        bool, typer.Option(help="Train the refusal LoRA (minutes) instead of merging the shipped one.")
    ] = False,
) -> None:
    """Build the safety-aligned base model (smollm2-135m-safe) in SAFETUNE_MODEL_CACHE, once."""
    cache = _model_cache()
    argv = [sys.executable, "-m", "sap_core.alignment", "--cache", str(cache)]
    result = subprocess.run([*argv, "--from-scratch"] if from_scratch else argv, check=False)
    raise typer.Exit(result.returncode)
