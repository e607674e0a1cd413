"""The demo's comparison: the base model, plain fine-tuning and guarded fine-tuning, side by side.

Both jobs' reports hold the same base evaluation (the second job reads it from the base-evaluation
cache), so the base row comes from the guarded job's report. Each row carries the refusal rate and
the harmful score on the held-out harmful prompts, the over-refusal rate on the benign ones (all with
95% intervals) and the validation loss; the verdict is the guarded job's own report verdict, with a
sentence that says what the guard bought against plain fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rate:
    rate: float | None
    low: float | None
    high: float | None
    k: int | None
    n: int | None

    @classmethod
    def of(cls, side: dict[str, Any]) -> Rate:
        ci = side.get("ci95") or [None, None]
        return cls(side.get("rate"), ci[0], ci[1], side.get("k"), side.get("n"))

    def text(self) -> str:
        if self.rate is None:
            return "-"
        interval = "" if self.low is None or self.high is None else f" [{self.low:.2f}, {self.high:.2f}]"
        return f"{self.rate:.2f}{interval}"


@dataclass(frozen=True)
class ComparisonRow:
    label: str
    refusal: Rate
    harmful: Rate
    over_refusal: Rate
    val_loss: float | None
    verdict: str | None


def _row(label: str, report: dict[str, Any], side: str, verdict: str | None) -> ComparisonRow:
    metrics = report["metrics"]
    utility = report.get("utility") or {}
    return ComparisonRow(
        label=label,
        refusal=Rate.of(metrics["refusal_rate"][side]),
        harmful=Rate.of(metrics["harmful_score"][side]),
        over_refusal=Rate.of(metrics["over_refusal_rate"][side]),
        val_loss=utility.get("val_loss_before" if side == "base" else "val_loss_after"),
        verdict=verdict,
    )


def comparison_rows(
    guarded: dict[str, Any], plain: dict[str, Any], *, base_model: str, guard: str, plain_guard: str
) -> list[ComparisonRow]:
    """Base, then fine-tuning with `plain_guard`, then with `guard` (reports as the API returns them)."""
    if guarded["prompt_sets"] != plain["prompt_sets"]:
        raise ValueError("the two jobs were evaluated on different prompt sets: they cannot be compared")
    return [
        _row(f"base {base_model}", guarded, "base", None),
        _row(f"tuned, guard {plain_guard}", plain, "tuned", plain["verdict"]["status"]),
        _row(f"tuned, guard {guard}", guarded, "tuned", guarded["verdict"]["status"]),
    ]


def headline(rows: list[ComparisonRow]) -> str:
    """One sentence: how much refusal each fine-tuning kept, and what the guard cost in val loss."""
    base, plain, guarded = rows
    parts = []
    if None not in (base.refusal.rate, plain.refusal.rate, guarded.refusal.rate):
        parts.append(
            f"refusal {base.refusal.rate:.2f} before; {plain.label}: {plain.refusal.rate:.2f}, "
            f"{guarded.label}: {guarded.refusal.rate:.2f}"
        )
    if plain.val_loss and guarded.val_loss is not None:
        parts.append(f"val loss {guarded.val_loss / plain.val_loss - 1:+.1%} vs {plain.label}")
    return "; ".join(parts)
