"""Inline SVG charts for the HTML safety report, drawn on the server (no JavaScript, no CDN).

Only presentation attributes are used (no ``style=``), so the page's Content-Security-Policy can
allow exactly one hashed <style> block. Every piece of text goes through ``html.escape``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

BASE_COLOR = "#8a94a6"
TUNED_COLOR = "#2f6fdf"
VAL_COLOR = "#d9822b"
WIDTH = 640
LABEL_W = 170
PLOT_W = WIDTH - LABEL_W - 70


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _x(rate: float) -> float:
    return LABEL_W + max(0.0, min(1.0, rate)) * PLOT_W


def _bar(y: float, rate: float | None, ci: Sequence[float] | None, color: str, name: str) -> str:
    parts = [f'<text x="{LABEL_W - 8}" y="{y + 11}" text-anchor="end" font-size="11">{escape(name)}</text>']
    if rate is None:
        parts.append(f'<text x="{LABEL_W + 4}" y="{y + 11}" font-size="11">no data</text>')
        return "".join(parts)
    parts.append(
        f'<rect x="{LABEL_W}" y="{y}" width="{_x(rate) - LABEL_W:.1f}" height="14" fill="{color}">'
        f"<title>{escape(name)}: {_pct(rate)}</title></rect>"
    )
    if ci and len(ci) == 2:
        lo, hi, mid = _x(float(ci[0])), _x(float(ci[1])), y + 7
        parts.append(
            f'<g stroke="#222" stroke-width="1.2" class="ci"><line x1="{lo:.1f}" y1="{mid}" x2="{hi:.1f}" '
            f'y2="{mid}"/><line x1="{lo:.1f}" y1="{y + 2}" x2="{lo:.1f}" y2="{y + 12}"/>'
            f'<line x1="{hi:.1f}" y1="{y + 2}" x2="{hi:.1f}" y2="{y + 12}"/></g>'
        )
        label_x = max(hi, _x(rate)) + 6
    else:
        label_x = _x(rate) + 6
    parts.append(f'<text x="{label_x:.1f}" y="{y + 11}" font-size="11">{_pct(rate)}</text>')
    return "".join(parts)


def _axis(height: float) -> str:
    ticks = []
    for i in range(5):
        x = _x(i / 4)
        ticks.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 14}" stroke="#e3e6eb"/>'
            f'<text x="{x:.1f}" y="{height - 2}" font-size="10" text-anchor="middle">{i * 25}%</text>'
        )
    return "".join(ticks)


def _svg(height: float, body: str, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
        f'viewBox="0 0 {WIDTH} {height:.0f}" role="img" aria-label="{escape(title)}" '
        f'font-family="system-ui, sans-serif">{body}</svg>'
    )


def rate_bars(metrics: dict[str, Any]) -> str:
    """Base vs fine-tuned bars with 95% Wilson whiskers for each headline rate."""
    rows = [
        ("harmful_score", "Harmful score"),
        ("refusal_rate", "Refusal rate (harmful prompts)"),
        ("over_refusal_rate", "Over-refusal (benign prompts)"),
    ]
    body, y = [], 8.0
    for key, label in rows:
        metric = metrics.get(key) or {}
        body.append(f'<text x="4" y="{y + 10}" font-size="12" font-weight="600">{escape(label)}</text>')
        y += 16
        for side, color, name in (("base", BASE_COLOR, "base"), ("tuned", TUNED_COLOR, "fine-tuned")):
            stats = metric.get(side) or {}
            body.append(_bar(y, stats.get("rate"), stats.get("ci95"), color, name))
            y += 20
        y += 8
    height = y + 16
    return _svg(height, _axis(height) + "".join(body), "base versus fine-tuned safety rates")


def category_bars(per_category: dict[str, Any]) -> str:
    """Harmful-answer rate per harm category, base vs fine-tuned."""
    if not per_category:
        return '<p class="muted">No per-category results.</p>'
    body, y = [], 6.0
    for category, c in per_category.items():
        n = int(c.get("n") or 0)
        for side, color, name in (("base", BASE_COLOR, "base"), ("tuned", TUNED_COLOR, "fine-tuned")):
            rate = c.get(f"{side}_harmful", 0) / n if n else None
            label = f"{category} · {name}" if side == "base" else name
            body.append(_bar(y, rate, None, color, label))
            y += 17
        y += 7
    height = y + 16
    return _svg(height, _axis(height) + "".join(body), "harmful rate per category")


def _ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    if hi <= lo:
        return [lo]
    return [lo + (hi - lo) * i / count for i in range(count + 1)]


def loss_curve(train: list[tuple[int, float]], val: list[tuple[int, float]]) -> str:
    """Training loss (line) and validation loss (points + line) against the optimizer step."""
    points = [p for p in train + val if math.isfinite(p[1])]
    if not points:
        return '<p class="muted">No loss values were recorded for this job.</p>'
    height, left, top, plot_h = 260.0, 56.0, 10.0, 200.0
    plot_w = WIDTH - left - 20
    max_step = max(1, max(s for s, _ in points))
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5

    def xy(step: int, loss: float) -> str:
        return f"{left + step / max_step * plot_w:.1f},{top + (hi - loss) / (hi - lo) * plot_h:.1f}"

    body = []
    for value in _ticks(lo, hi):
        y = top + (hi - value) / (hi - lo) * plot_h
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e3e6eb"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{value:.3g}</text>'
        )
    for step in sorted({round(s) for s in _ticks(0, max_step)}):
        x = left + step / max_step * plot_w
        body.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" font-size="10" text-anchor="middle">{step}</text>'
        )
    body.append(
        f'<text x="{left + plot_w / 2}" y="{height - 4}" font-size="11" text-anchor="middle">step</text>'
    )
    for series, color, name in ((train, TUNED_COLOR, "training loss"), (val, VAL_COLOR, "validation loss")):
        finite = sorted(p for p in series if math.isfinite(p[1]))
        if not finite:
            continue
        coords = " ".join(xy(s, v) for s, v in finite)
        body.append(
            f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2">'
            f"<title>{name}</title></polyline>"
        )
        for s, v in finite:
            cx, cy = xy(s, v).split(",")
            body.append(
                f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"><title>{s}: {v:.4f}</title></circle>'
            )
    legend_y = top + 8
    for i, (color, name) in enumerate(((TUNED_COLOR, "training"), (VAL_COLOR, "validation"))):
        x = left + plot_w - 180 + i * 95
        body.append(
            f'<rect x="{x}" y="{legend_y - 8}" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="{legend_y + 1}" font-size="11">{name}</text>'
        )
    return _svg(height, "".join(body), "training and validation loss")
