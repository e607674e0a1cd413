"""The console script stays light: no torch/sap_core/worker at import, and --help lists every command."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from cli.main import app

HEAVY = ("torch", "transformers", "peft", "sap_core", "worker", "celery", "sqlalchemy", "alembic")


def test_importing_the_cli_loads_no_ml_stack() -> None:
    code = (
        "import sys, cli.main; "
        f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == ""


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0
    for command in (
        "serve", "worker", "safety-align", "migrate", "submit", "status", "jobs",
        "cancel", "watch", "report", "download", "keys", "models",
    ):  # fmt: skip
        assert f" {command} " in result.stdout
