"""ErrorCode: every member is raised or stored somewhere (no dead codes in the public contract)."""

from __future__ import annotations

import re
from pathlib import Path

from safetune.errors import ErrorCode

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_PACKAGES = ("api", "safetune", "worker", "cli")


def test_every_error_code_is_used_outside_its_definition() -> None:
    sources = "\n".join(
        path.read_text(encoding="utf-8")
        for package in SOURCE_PACKAGES
        for path in (REPO_ROOT / package).rglob("*.py")
        if path != REPO_ROOT / "safetune" / "errors.py"
    )
    unused = [member.name for member in ErrorCode if not re.search(rf"\bErrorCode\.{member.name}\b", sources)]
    assert unused == []


def test_machine_codes_are_unique() -> None:
    codes = [member.code for member in ErrorCode]
    assert len(codes) == len(set(codes))


def test_a_job_failure_code_maps_back_to_its_member() -> None:
    assert ErrorCode.for_job_failure("training_diverged") is ErrorCode.TRAINING_DIVERGED
    assert ErrorCode.for_job_failure("no_such_code") is None
    assert ErrorCode.for_job_failure(None) is None
