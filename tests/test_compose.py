"""docker-compose.yml and the Dockerfile: validated by `docker-compose config` (no engine needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from safetune.config import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRETS = {"POSTGRES_PASSWORD": "pg-secret"}
APP_SERVICES = ("migrate", "api", "worker")

pytestmark = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose binary missing (Debian package docker-compose; bootstrap.sh installs it)",
)


def _config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith("SAFETUNE_")}
    return subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config"],
        cwd=REPO_ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    result = _config(SECRETS)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, dict[str, Any]] = yaml.safe_load(result.stdout)["services"]
    return parsed


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_the_stack_has_its_five_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker"}
    assert services["postgres"]["image"].startswith("postgres:15")
    assert {services[name]["image"] for name in APP_SERVICES} == {"safetune:latest"}


def test_healthchecks_and_start_order(services: dict[str, dict[str, Any]]) -> None:
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])

    assert services["migrate"]["command"] == ["safetune", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
    assert services["api"]["command"][:2] == ["uvicorn", "api.main:app"]
    assert [p["target"] if isinstance(p, dict) else p for p in services["api"]["ports"]] in (
        [8000],
        ["8000:8000"],
    )


def test_worker_is_one_celery_process_on_a_gpu(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    command = worker["command"]
    assert command[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert "--concurrency=1" in command
    assert command[command.index("-Q") + 1] == "training"
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert any(str(v).split(":")[1] == "/models" for v in worker["volumes"])


def test_settings_come_from_safetune_env(services: dict[str, dict[str, Any]]) -> None:
    for name in APP_SERVICES:
        env = _env(services[name])
        assert env["SAFETUNE_DATABASE_URL"].startswith(
            "postgresql+psycopg://safetune:pg-secret@postgres:5432/"
        )
        assert env["SAFETUNE_BROKER_URL"] == "redis://redis:6379/0"
        assert env["SAFETUNE_MODEL_CACHE"] == "/models"
        assert env["SAFETUNE_ENVIRONMENT"] == "production"
        # Every SAFETUNE_* name must be a real Settings field (a typo would silently fall back).
        safetune_vars = {k: v for k, v in env.items() if k.startswith("SAFETUNE_")}
        unknown = {
            k for k in safetune_vars if k.removeprefix("SAFETUNE_").lower() not in Settings.model_fields
        }
        assert not unknown
        # ...and together they must pass the production validators (model_validate reads no env/.env).
        Settings.model_validate({k.removeprefix("SAFETUNE_").lower(): v for k, v in safetune_vars.items()})


def test_secrets_are_required(services: dict[str, dict[str, Any]]) -> None:
    for missing in SECRETS:
        result = _config({k: v for k, v in SECRETS.items() if k != missing})
        assert result.returncode != 0
        assert f"set {missing}" in result.stderr


def test_dockerfile_runs_as_non_root_on_python_311_slim() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    # Every path the image copies exists (a renamed package would otherwise break only the build).
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO_ROOT / source).exists(), source
