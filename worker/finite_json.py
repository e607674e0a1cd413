"""JSON for the child protocol and reports: non-finite floats travel as null, never as `NaN`.

Python's json writes `NaN`/`Infinity`, which is not JSON: Postgres `json` columns reject it (a diverged
run used to fail with SQL text as its error) and so do strict clients. Both ends map them to null: the
child when it writes, and the supervisor again when it reads, since another launcher may not.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every non-finite float inside it (dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def dumps(value: Any) -> str:
    """Strict JSON; objects json cannot encode (numpy/torch scalars) go through float()."""
    return json.dumps(finite(value), default=lambda obj: finite(float(obj)), allow_nan=False)


def loads(text: str) -> Any:
    """Parse JSON, reading `NaN`, `Infinity` and `-Infinity` as None."""
    return json.loads(text, parse_constant=lambda _name: None)
