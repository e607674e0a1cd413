from __future__ import annotations

import numpy as np

from sap_core.frontier import (
    CurvePoint,
    at_matched_loss,
    compare_at_matched_loss,
    crossing,
    drop_ratio_at_guard_loss,
)


def _pt(step: int, val: float, refused: list[int], harmful: list[int] | None = None) -> CurvePoint:
    harmful = harmful if harmful is not None else [1 - r for r in refused]
    return CurvePoint(step, val, np.array(refused, float), np.array(harmful, float), np.zeros(4))


def test_crossing_finds_the_first_segment_through_the_target() -> None:
    assert crossing([3.0, 2.5, 2.0], 2.25) == (1, 2, 0.5)
    assert crossing([3.0, 2.5, 2.0], 3.0) == (0, 1, 0.0)
    assert crossing([3.0, 2.5, 2.4], 2.0) is None  # never learns that much


def test_interpolation_is_per_prompt_and_linear_in_val_loss() -> None:
    curve = [_pt(0, 3.0, [1, 1, 1, 1]), _pt(12, 2.0, [1, 0, 0, 1])]
    got = at_matched_loss(curve, 2.5)
    assert got is not None
    assert got["refused"].tolist() == [1.0, 0.5, 0.5, 1.0]


def test_a_guard_identical_to_plain_sft_has_ratio_one_and_a_base_like_guard_ratio_zero() -> None:
    rng = np.random.default_rng(0)
    n = 200
    base = _pt(0, 3.0, [1] * n)
    sft_final = [_pt(36, 2.0, list((rng.random(n) > 0.3).astype(int))) for _ in range(3)]
    same = [[base, _pt(36, 2.0, list(f.refused.astype(int)))] for f in sft_final]
    cmp = compare_at_matched_loss(base, sft_final, same, resamples=200)
    assert cmp.reached and abs(cmp.matched_drop_ratio - 1.0) < 1e-9 and cmp.p_value > 0.5
    safe = [[base, _pt(36, 1.9, [1] * n)] for _ in sft_final]
    cmp = compare_at_matched_loss(base, sft_final, safe, resamples=200)
    assert cmp.matched_drop_ratio == 0.0 and cmp.p_value < 0.01
    lo, hi = cmp.matched_drop_ratio_ci
    assert lo <= 0.0 <= hi


def test_a_guard_that_never_reaches_matched_loss_is_reported_as_such() -> None:
    base = _pt(0, 3.0, [1, 1, 1, 1])
    cmp = compare_at_matched_loss(base, [_pt(36, 2.0, [0, 0, 1, 1])], [[base, _pt(36, 2.6, [1, 1, 1, 1])]])
    assert not cmp.reached and cmp.matched_drop_ratio is None


def test_reverse_ratio_interpolates_plain_sft_at_the_guard_loss() -> None:
    base = _pt(0, 3.0, [1, 1, 1, 1])
    sft = [base, _pt(12, 2.0, [0, 0, 1, 1])]  # drop 0.5 at loss 2.0, 0.25 at loss 2.5
    guard_final = _pt(36, 2.5, [1, 1, 1, 0])  # drop 0.25 at loss 2.5
    assert drop_ratio_at_guard_loss(base, [sft], [guard_final]) == 1.0
    assert drop_ratio_at_guard_loss(base, [sft], [_pt(36, 1.5, [1, 1, 1, 1])]) is None  # SFT never got there
