"""The self-contained HTML safety report: one page, no scripts, no external resources.

Model generations are untrusted output (a fine-tuned model can be made to print ``<script>``), so
every value from the report goes through ``html.escape``; the Content-Security-Policy additionally
forbids scripts outright (``default-src 'none'``) and allows only the page's own hashed stylesheet.
"""

from __future__ import annotations

import base64
import hashlib
import math
from html import escape
from typing import Any

from api.report_charts import category_bars, loss_curve, rate_bars

STYLE = """
body{font-family:system-ui,-apple-system,sans-serif;margin:0 auto;max-width:980px;padding:24px;color:#1d2330}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e3e6eb}
.muted{color:#6b7280}.banner{border-radius:8px;padding:14px 18px;margin:18px 0}
.banner h2{border:0;margin:0 0 6px;font-size:20px}.pass{background:#e6f6ea;border:1px solid #3c9a5a}
.warn{background:#fff5e0;border:1px solid #d9822b}.fail{background:#fde8e8;border:1px solid #c43c3c}
table{border-collapse:collapse;width:100%;font-size:13px}td,th{border-bottom:1px solid #eceef2;
padding:5px 8px;text-align:left;vertical-align:top}th{background:#f6f7f9}
.ex{border:1px solid #e3e6eb;border-radius:6px;margin:10px 0;padding:10px}
pre{white-space:pre-wrap;word-break:break-word;background:#f6f7f9;padding:8px;margin:4px 0;font-size:12px}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
.lb{background:#8a94a6}.lt{background:#2f6fdf}.cols{display:grid;grid-template-columns:1fr 1fr;gap:10px}
"""
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
VERDICT_TITLES = {
    "pass": "Pass: safety alignment preserved",
    "warn": "Warning: the evaluation cannot rule out a safety regression",
    "fail": "Fail: the fine-tuned model is less safe than allowed",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _pct(value: Any) -> str:
    return "—" if value is None else f"{float(value) * 100:.1f}%"


def _ci(ci: Any) -> str:
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]" if isinstance(ci, list | tuple) and len(ci) == 2 else "—"


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        rows: list[tuple[str, Any]] = []
        for key, value in data.items():
            rows += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [(prefix, data)]


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = []
    labels = {
        "harmful_score": "Harmful score",
        "refusal_rate": "Refusal rate",
        "over_refusal_rate": "Over-refusal rate",
    }
    for key, label in labels.items():
        m = metrics.get(key) or {}
        base, tuned, delta = m.get("base") or {}, m.get("tuned") or {}, m.get("delta") or {}
        rows.append(
            f"<tr><td>{label}</td><td>{_pct(base.get('rate'))} {_ci(base.get('ci95'))}<br>"
            f"<span class=muted>{_fmt(base.get('k'))}/{_fmt(base.get('n'))}</span></td>"
            f"<td>{_pct(tuned.get('rate'))} {_ci(tuned.get('ci95'))}<br>"
            f"<span class=muted>{_fmt(tuned.get('k'))}/{_fmt(tuned.get('n'))}</span></td>"
            f"<td>{_pct(delta.get('value'))} {_ci(delta.get('ci95'))}</td></tr>"
        )
    return (
        "<table><tr><th>Metric</th><th>Base (95% CI)</th><th>Fine-tuned (95% CI)</th>"
        f"<th>Change (95% CI)</th></tr>{''.join(rows)}</table>"
    )


def _examples(examples: list[dict[str, Any]]) -> str:
    if not examples:
        return '<p class="muted">No example generations in this report.</p>'
    out = []
    for ex in examples:
        bv, tv = ex.get("base_verdict") or {}, ex.get("tuned_verdict") or {}
        kind = "harmful prompt" if ex.get("harmful_prompt") else "benign prompt"
        out.append(
            f'<div class="ex"><div class="muted">{escape(str(ex.get("category", "")))} · {kind} · '
            f"{escape(str(ex.get('prompt_set', '')))}</div><pre>{escape(str(ex.get('prompt', '')))}</pre>"
            f'<div class="cols"><div><b>Base</b> <span class=muted>harmful={_fmt(bv.get("harmful"))}, '
            f"refused={_fmt(bv.get('refused'))}</span><pre>{escape(str(ex.get('base_response', '')))}</pre>"
            f"</div><div><b>Fine-tuned</b> <span class=muted>harmful={_fmt(tv.get('harmful'))}, "
            f"refused={_fmt(tv.get('refused'))}</span><pre>{escape(str(ex.get('tuned_response', '')))}</pre>"
            "</div></div></div>"
        )
    return "".join(out)


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def val_loss_points(utility: dict[str, Any]) -> list[tuple[int, float]]:
    """``utility.val_losses`` is {step: loss}; JSON turned the int keys into strings."""
    points = []
    for step, loss in (utility.get("val_losses") or {}).items():
        try:
            points.append((int(step), float(loss)))
        except (TypeError, ValueError):
            continue
    return sorted(points)


def render_report_page(
    *,
    job_id: str,
    base_model: str,
    guard: str,
    created_at: str,
    report: dict[str, Any],
    train_losses: list[tuple[int, float]],
) -> str:
    """The whole page as a string. ``train_losses`` comes from the job's "metrics" events."""
    verdict = report.get("verdict") or {}
    status = str(verdict.get("status", "warn"))
    status_class = status if status in VERDICT_TITLES else "warn"
    reasons = verdict.get("reasons") or []
    reasons_html = (
        "<ul>" + "".join(f"<li>{escape(str(r))}</li>" for r in reasons) + "</ul>"
        if reasons
        else '<p class="muted">Every check is within its threshold.</p>'
    )
    metrics = report.get("metrics") or {}
    utility = report.get("utility") or {}
    training = report.get("training") or {}
    utility_rows = [(k, v) for k, v in utility.items() if k != "val_losses"]
    guard_rows = [("guard", guard), *_flatten(training)]
    title = f"Safety report · {job_id}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="referrer" content="no-referrer"><title>{escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>Safety report</h1>
<div class="muted">Job <code>{escape(job_id)}</code> · base model {escape(base_model)} · guard {escape(guard)}
 · {escape(created_at)} · primary judge {escape(str(report.get("primary_judge", "—")))}</div>
<section id="verdict" class="banner {status_class}" data-verdict="{escape(status_class)}">
<h2>{escape(VERDICT_TITLES.get(status_class, status))}</h2>{reasons_html}</section>
<h2>Base vs fine-tuned</h2>
<div class="legend muted"><span class="lb"></span>base<span class="lt"></span>fine-tuned
 · whiskers: 95% confidence interval</div>
{rate_bars(metrics)}
{_metrics_table(metrics)}
<h2>Harmful answers by category</h2>
{category_bars(report.get("per_category") or {})}
<h2>Training and validation loss</h2>
{loss_curve(train_losses, val_loss_points(utility))}
{_kv_table(utility_rows)}
<h2>Example generations</h2>
<p class="muted">Model output is shown verbatim as text; it is untrusted and may be offensive.</p>
{_examples(report.get("examples") or [])}
<h2>Guard and hyperparameters</h2>
{_kv_table(guard_rows)}
</body></html>
"""
