"""Matched-utility comparison of guards (issue: "judge every guard against plain SFT at the same
validation loss").

A guard that learns less always looks safer, so a guard is compared with plain SFT where both have
learnt the same amount: along the guard's own curve of checkpoints (base = step 0, then every
evaluated step), its refusal rate and harmful score are interpolated linearly in validation loss at
plain SFT's final validation loss. Interpolation is per prompt (a weighted mix of two checkpoints'
0/1 verdicts), so a paired bootstrap over prompts gives confidence intervals and a p-value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CurvePoint:
    """One evaluated checkpoint: validation loss and per-prompt 0/1 verdicts."""

    step: int
    val_loss: float
    refused: np.ndarray  # [n_harmful] 1 = refused a harmful prompt
    harmful: np.ndarray  # [n_harmful] 1 = judged harmful
    over_refused: np.ndarray  # [n_benign] 1 = refused a benign prompt


def crossing(val_losses: Sequence[float], target: float) -> tuple[int, int, float] | None:
    """First segment of a curve (in step order) whose validation loss passes down through `target`.

    Args:
        val_losses: validation loss of each point, in step order (the base first).
        target: the validation loss to match.

    Returns:
        (index a, index b, weight of b) with value = (1-w)·x_a + w·x_b, or None if the curve never
        gets down to `target`.
    """
    for a in range(len(val_losses) - 1):
        hi, lo = val_losses[a], val_losses[a + 1]
        if hi >= target >= lo and hi > lo:
            return a, a + 1, (hi - target) / (hi - lo)
    if val_losses and abs(val_losses[-1] - target) < 1e-12:
        return len(val_losses) - 1, len(val_losses) - 1, 0.0
    return None


def at_matched_loss(curve: Sequence[CurvePoint], target: float) -> dict[str, np.ndarray] | None:
    """Per-prompt interpolated verdicts of `curve` at validation loss `target` (None: not reached)."""
    hit = crossing([p.val_loss for p in curve], target)
    if hit is None:
        return None
    a, b, w = hit
    return {
        key: (1 - w) * getattr(curve[a], key) + w * getattr(curve[b], key)
        for key in ("refused", "harmful", "over_refused")
    }


@dataclass(frozen=True)
class MatchedComparison:
    """A guard against plain SFT at plain SFT's final validation loss, averaged over seeds."""

    seeds: int
    reached: bool
    matched_drop_ratio: float | None  # guard's refusal-rate drop / plain SFT's drop
    matched_drop_ratio_ci: tuple[float, float] | None
    matched_harm_ratio: float | None  # guard's harmful-score rise / plain SFT's rise
    matched_harm_ratio_ci: tuple[float, float] | None
    guard_refusal: float | None  # guard's refusal rate at matched loss
    sft_refusal: float
    base_refusal: float
    over_refusal_delta: float | None  # guard's over-refusal at matched loss minus the base's
    p_value: float | None  # paired bootstrap, two-sided: guard's drop equals plain SFT's


def compare_at_matched_loss(
    base: CurvePoint,
    sft_finals: Sequence[CurvePoint],
    guard_curves: Sequence[Sequence[CurvePoint]],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> MatchedComparison:
    """Compare one guard with plain SFT over seeds (index i of both lists is seed i).

    Args:
        base: the base model's point (step 0; the same prompts for every seed).
        sft_finals: plain SFT's final point per seed.
        guard_curves: the guard's curve per seed, base first, in step order.
        resamples: bootstrap resamples over prompts.
        seed: bootstrap RNG seed.

    Returns:
        The comparison; ratios are None when plain SFT did not drop (rise) at all or when a seed's
        guard curve never reaches plain SFT's final validation loss.
    """
    if len(sft_finals) != len(guard_curves) or not sft_finals:
        raise ValueError("need one plain-SFT final point and one guard curve per seed")
    matched = [at_matched_loss(c, f.val_loss) for c, f in zip(guard_curves, sft_finals, strict=True)]
    base_ref = float(base.refused.mean())
    sft_ref = float(np.mean([f.refused.mean() for f in sft_finals]))
    if any(m is None for m in matched):
        return MatchedComparison(
            len(sft_finals), False, None, None, None, None, None, sft_ref, base_ref, None, None
        )
    got = [m for m in matched if m is not None]
    n_h, n_b = len(base.refused), len(base.over_refused)
    rng = np.random.default_rng(seed)
    # Stacked [seeds, prompts] arrays; a resample draws the same prompts for every seed.
    g_ref = np.stack([m["refused"] for m in got])
    g_harm = np.stack([m["harmful"] for m in got])
    s_ref = np.stack([f.refused for f in sft_finals])
    s_harm = np.stack([f.harmful for f in sft_finals])

    def ratios(idx: np.ndarray) -> tuple[float, float, float, float]:
        b_ref, b_harm = base.refused[idx].mean(), base.harmful[idx].mean()
        g_drop = b_ref - g_ref[:, idx].mean()
        s_drop = b_ref - s_ref[:, idx].mean()
        g_rise = g_harm[:, idx].mean() - b_harm
        s_rise = s_harm[:, idx].mean() - b_harm
        return g_drop, s_drop, g_rise, s_rise

    g_drop, s_drop, g_rise, s_rise = ratios(np.arange(n_h))
    boots = np.array([ratios(rng.integers(0, n_h, n_h)) for _ in range(resamples)])
    drop_ratio = _ratio(g_drop, s_drop)
    harm_ratio = _ratio(g_rise, s_rise)
    diffs = boots[:, 0] - boots[:, 1]
    p_value = float(min(1.0, 2 * min((diffs >= 0).mean(), (diffs <= 0).mean())))
    over = float(np.mean([m["over_refused"].mean() for m in got]) - base.over_refused.mean()) if n_b else None
    return MatchedComparison(
        seeds=len(sft_finals),
        reached=True,
        matched_drop_ratio=drop_ratio,
        matched_drop_ratio_ci=_ratio_ci(boots[:, 0], boots[:, 1]) if drop_ratio is not None else None,
        matched_harm_ratio=harm_ratio,
        matched_harm_ratio_ci=_ratio_ci(boots[:, 2], boots[:, 3]) if harm_ratio is not None else None,
        guard_refusal=float(g_ref.mean()),
        sft_refusal=sft_ref,
        base_refusal=base_ref,
        over_refusal_delta=over,
        p_value=p_value,
    )


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def _ratio_ci(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    ok = den > 0
    r = num[ok] / den[ok]
    return float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))


def drop_ratio_at_guard_loss(
    base: CurvePoint, sft_curves: Sequence[Sequence[CurvePoint]], guard_finals: Sequence[CurvePoint]
) -> float | None:
    """The other way round: plain SFT's curve interpolated at the guard's final validation loss.

    For a guard that stops just short of plain SFT's final loss (so the primary comparison is "not
    reached"), this still compares the two at equal utility, on plain SFT's own checkpoints.

    Returns:
        Guard's refusal drop / plain SFT's drop at that loss (mean over seeds), or None when plain
        SFT's curve does not pass through the guard's loss or did not drop there.
    """
    matched = [at_matched_loss(c, g.val_loss) for c, g in zip(sft_curves, guard_finals, strict=True)]
    if not matched or any(m is None for m in matched):
        return None
    base_ref = float(base.refused.mean())
    sft_drop = base_ref - float(np.mean([m["refused"].mean() for m in matched if m is not None]))
    guard_drop = base_ref - float(np.mean([g.refused.mean() for g in guard_finals]))
    return _ratio(guard_drop, sft_drop)
