"""keys create/revoke/list, models list and migrate: direct database access, no HTTP."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from safetune.base_models import REGISTRY


def test_keys_create_then_revoke_round_trip(runner: CliRunner, live_server: str) -> None:
    tenant = f"cli-{uuid.uuid4().hex[:8]}"

    created = runner.invoke(app, ["keys", "create", "--tenant", tenant])
    assert created.exit_code == 0, created.output
    raw_key = created.stdout.strip()
    key_id = re.search(r"key id (\S+);", created.stderr).group(1)  # type: ignore[union-attr]
    env = {"SAFETUNE_URL": live_server, "SAFETUNE_API_KEY": raw_key}
    assert runner.invoke(app, ["jobs"], env=env).exit_code == 0

    # A second key for the same tenant reuses the tenant.
    again = runner.invoke(app, ["keys", "create", "--tenant", tenant])
    assert again.exit_code == 0 and "created tenant" not in again.stderr
    listing = runner.invoke(app, ["keys", "list", "--tenant", tenant])
    assert listing.stdout.count("key-") == 2

    revoked = runner.invoke(app, ["keys", "revoke", key_id])
    assert revoked.exit_code == 0, revoked.output
    after = runner.invoke(app, ["jobs"], env=env)
    assert after.exit_code == 1
    assert "auth_invalid" in after.stderr and "HTTP 401" in after.stderr

    twice = runner.invoke(app, ["keys", "revoke", key_id])
    assert twice.exit_code == 1 and "no active API key" in twice.stderr


def test_models_list_shows_the_registry_and_the_cache(tmp_path: Path) -> None:
    (tmp_path / "tiny-random-llama").mkdir()
    (tmp_path / "tiny-random-llama" / "config.json").write_text("{}")
    code = "from cli.main import app; app(['models', 'list'])"
    env = {**os.environ, "SAFETUNE_MODEL_CACHE": str(tmp_path), "COLUMNS": "200"}

    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 2}
    assert set(REGISTRY) <= set(rows)
    assert "yes" in rows["tiny-random-llama"]
    assert "yes" not in rows["smollm2-135m-safe"]


def test_migrate_creates_the_schema_from_any_directory(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    env = {**os.environ, "SAFETUNE_DATABASE_URL": f"sqlite:///{db}", "SAFETUNE_STATE_DIR": str(tmp_path)}

    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    tables = {
        row[0] for row in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    assert {"tenants", "api_keys", "jobs", "job_events", "alembic_version"} <= tables
