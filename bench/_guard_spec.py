"""Guard specs on a bench's command line: ``name[:section.field=value;...]`` -> (guard, overrides)."""

from __future__ import annotations

import json
from typing import Any

from sap_core.config import guard_parts


def parse_guard(spec: str) -> tuple[str, dict[str, Any]]:
    """``"anchor+constrained:anchor.weight=0.5;constrained.early_beta=1"`` -> (guard, nested overrides).

    A bare key (``projection=false``) belongs to the guard's only part.
    """
    name, _, opts = spec.partition(":")
    parts = guard_parts(name)
    overrides: dict[str, dict[str, Any]] = {}
    for item in filter(None, opts.split(";")):
        key, _, raw = item.partition("=")
        section, _, field_name = key.rpartition(".")
        if not section:
            if len(parts) != 1:
                raise SystemExit(f"{spec!r}: name the guard of {key!r} (e.g. anchor.{key})")
            section = parts[0]
        value: Any = json.loads(raw.replace("/", ",").join("[]")) if "/" in raw else _scalar(raw)
        overrides.setdefault(section, {})[field_name] = value
    return name, overrides


def _scalar(raw: str) -> Any:
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(raw)
    except ValueError:
        try:
            return float(raw)
        except ValueError:
            return raw
