"""Structured logs: a record's extra fields come out as top-level JSON keys."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from safetune.logging_setup import JsonFormatter, configure_logging


def test_extra_job_id_renders_as_a_json_field(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    configure_logging()  # idempotent: still one JSON line per record
    logging.getLogger("safetune.worker").info("job claimed", extra={"job_id": "ftjob-123", "attempt": 2})
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["job_id"] == "ftjob-123" and entry["attempt"] == 2
    assert (entry["level"], entry["logger"], entry["message"]) == ("info", "safetune.worker", "job claimed")
    assert entry["ts"].endswith("+00:00")


def test_exceptions_and_unserialisable_extras_still_give_valid_json() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed %s", ("here",), exc_info=True, extra={"obj": object()}
        )
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "failed here" and "ValueError: boom" in entry["exc_info"]
    assert entry["obj"].startswith("<object object")
