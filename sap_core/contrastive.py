"""Contrastive (prompt, safe, harmful) triples for SAP's harmful direction (sap_ema.md §1.4)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

DEFAULT_RESOURCE = ("sap_core.resources", "safety/contrastive_triples.jsonl")


@dataclass(frozen=True)
class ContrastiveTriple:
    """A safety-critical prompt with a safe (refusal) and a harmful response."""

    prompt: str
    safe: str
    harmful: str

    def __post_init__(self) -> None:
        for name in ("prompt", "safe", "harmful"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name}={value!r}: must be a non-empty string")


def parse_contrastive_lines(lines: list[str], source: str) -> list[ContrastiveTriple]:
    """Parse JSONL lines of {"prompt","safe","harmful"}.

    Args:
        lines: Raw lines; blank lines are skipped.
        source: Name used in error messages.

    Returns:
        The triples.

    Raises:
        ValueError: Naming the 1-based line number of the first bad line, or if there are none.
    """
    triples: list[ContrastiveTriple] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("expected a JSON object")
            # "source" / "category" are provenance metadata in the shipped file; anything else is a typo.
            extra = set(row) - {"prompt", "safe", "harmful", "source", "category"}
            if extra:
                raise ValueError(f"unknown keys {sorted(extra)}")
            triples.append(ContrastiveTriple(row.get("prompt"), row.get("safe"), row.get("harmful")))  # type: ignore[arg-type]  # __post_init__ checks types
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source} line {lineno}: {exc}") from exc
    if not triples:
        raise ValueError(f"{source}: no contrastive triples")
    return triples


def load_contrastive_jsonl(path: str | Path) -> list[ContrastiveTriple]:
    """Load triples from a JSONL file.

    Args:
        path: File with one {"prompt","safe","harmful"} object per line.

    Returns:
        The triples.
    """
    path = Path(path)
    return parse_contrastive_lines(path.read_text(encoding="utf-8").splitlines(), str(path))


def default_contrastive_triples() -> list[ContrastiveTriple]:
    """Load the vendored triples from `sap_core/resources/safety/contrastive_triples.jsonl`.

    Returns:
        The triples.

    Raises:
        FileNotFoundError: If the resource file has not been vendored.
    """
    package, name = DEFAULT_RESOURCE
    ref = resources.files(package).joinpath(name)
    if not ref.is_file():
        raise FileNotFoundError(f"missing packaged resource {package}/{name}")
    return parse_contrastive_lines(ref.read_text(encoding="utf-8").splitlines(), f"{package}/{name}")
