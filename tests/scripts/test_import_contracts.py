"""The import-by-name contract: it sees what import-linter's graph cannot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts.import_contracts import imports_by_name, names_forbidden

REPO_ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # the venv running these tests


def test_calls_that_import_by_a_literal_name_are_found() -> None:
    source = (
        "import importlib\n"
        "from importlib import import_module\n"
        "importlib.import_module('worker.embedded').submit(1)\n"
        'import_module("api.main")\n'
        "__import__('torch')\n"
        "importlib.import_module(name)  # not a literal: cannot be judged\n"
        "print('worker.embedded')  # a string, not an import\n"
    )
    assert imports_by_name(source) == [(3, "worker.embedded"), (4, "api.main"), (5, "torch")]


def test_a_forbidden_package_matches_itself_and_its_submodules_only() -> None:
    forbidden = ["worker", "api"]
    assert names_forbidden("worker.embedded", forbidden) == "worker"
    assert names_forbidden("worker", forbidden) == "worker"
    assert names_forbidden("workers_pool", forbidden) is None
    assert names_forbidden("safetune.queue", forbidden) is None


def test_the_contract_breaks_on_safetune_importing_the_worker_by_name(tmp_path: Path) -> None:
    """What main had before issue 12: safetune/queue.py called import_module("worker.embedded")."""
    project = tmp_path / "project"
    for package in ("safetune", "api", "sap_core", "worker", "cli"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text("")
    # Modules the real contracts name, so that only the by-name import can break them.
    (project / "worker" / "child_protocol.py").write_text("")
    (project / "scripts").mkdir()
    (project / "scripts" / "import_contracts.py").write_text(
        (REPO_ROOT / "scripts" / "import_contracts.py").read_text()
    )
    (project / "safetune" / "queue.py").write_text(
        "import importlib\n\n\ndef go() -> None:\n    importlib.import_module('worker.embedded')\n"
    )
    (project / "pyproject.toml").write_text((REPO_ROOT / "pyproject.toml").read_text())
    result = subprocess.run([str(LINT_IMPORTS)], cwd=project, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "safetune.queue imports 'worker.embedded' by name (line 5): worker is forbidden" in result.stdout
    (project / "safetune" / "queue.py").write_text("def go() -> None:\n    pass\n")
    result = subprocess.run([str(LINT_IMPORTS)], cwd=project, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout
