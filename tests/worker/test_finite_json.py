"""The child protocol's JSON: non-finite floats become null both ways; the output is strict JSON."""

from __future__ import annotations

import json
import math

from worker import finite_json


def test_non_finite_floats_are_written_and_read_as_null() -> None:
    text = finite_json.dumps({"loss": math.nan, "curve": [1.5, math.inf, (-math.inf, 2)], "n": 3})
    assert json.loads(text, parse_constant=_reject) == {
        "loss": None,
        "curve": [1.5, None, [None, 2]],
        "n": 3,
    }
    # What another launcher (or the old child) writes: Python's NaN/Infinity tokens.
    raw = json.dumps({"loss": math.nan, "best": -math.inf, "ok": 0.5})
    assert "NaN" in raw
    assert finite_json.loads(raw) == {"loss": None, "best": None, "ok": 0.5}


def _reject(constant: str) -> None:
    raise AssertionError(f"not strict JSON: {constant}")
