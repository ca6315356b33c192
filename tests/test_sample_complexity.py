"""Sample-complexity reduction on hand-made curves whose answers are derived by hand below.

Baseline curves use perplexities e^k so that log-perplexity interpolation lands on round token counts.
"""

import math
import random

import numpy as np
import pytest

from pipeline.sample_complexity import (BEFORE_FIRST, INTERPOLATED, LINEAR, MIXED, NEVER_REACHED, POWER_LAW,
                                        across_seeds, paper_reading, pooled_kind, reductions, tokens_to_reach)

e = math.exp
# Falling baseline: log-ppl 5, 4, 3 at 100, 200, 300 tokens.
TOKENS, PPL = [100, 200, 300], [e(5), e(4), e(3)]


def test_mid_segment_interpolates_log_perplexity():
    # log P = 4.5 is halfway from 5 (at 100) to 4 (at 200) -> 150 tokens.
    reach = tokens_to_reach(TOKENS, PPL, e(4.5))
    assert reach.kind == INTERPOLATED
    assert reach.tokens == pytest.approx(150)
    # log P = 3.25 is 3/4 of the way from 4 (at 200) to 3 (at 300) -> 275 tokens.
    assert tokens_to_reach(TOKENS, PPL, e(3.25)).tokens == pytest.approx(275)


def test_interpolation_is_geometric_not_arithmetic_in_perplexity():
    # 100 -> 10 between 100 and 200 tokens: the geometric midpoint 10^1.5 ~ 31.6 is reached at 150;
    # a perplexity-space chord would put it at 100 + 100 * (100 - 31.6) / 90 ~ 176.
    assert tokens_to_reach([100, 200], [100.0, 10.0], 10 ** 1.5).tokens == pytest.approx(150)


def test_exact_hit_on_an_evaluation_point():
    assert tokens_to_reach(TOKENS, PPL, e(4)) == tokens_to_reach(TOKENS, PPL, PPL[1])
    reach = tokens_to_reach(TOKENS, PPL, PPL[1])
    assert (reach.tokens, reach.kind) == (200, INTERPOLATED)
    # Exactly the first evaluation is an ordinary hit, not a bound.
    first = tokens_to_reach(TOKENS, PPL, PPL[0])
    assert (first.tokens, first.kind) == (100, INTERPOLATED)


def test_never_reached_gives_a_lower_bound_at_the_last_evaluation():
    reach = tokens_to_reach(TOKENS, PPL, e(2.5))
    assert (reach.tokens, reach.kind) == (300, NEVER_REACHED)
    [r] = reductions([3], [250], [e(2.5)], TOKENS, PPL)
    assert r.kind == NEVER_REACHED
    assert r.reduction == pytest.approx(1 - 250 / 300)  # >= 1/6
    assert r.tokens_saved == pytest.approx(50)


def test_reached_before_first_evaluation_is_an_upper_bound_and_can_be_negative():
    # Baseline already at e^5 < e^6 at its first evaluation (100 tokens): n_b <= 100.
    [r] = reductions([2], [150], [e(6)], TOKENS, PPL)
    assert (r.baseline_tokens, r.kind) == (100, BEFORE_FIRST)
    assert r.reduction == pytest.approx(1 - 150 / 100)  # <= -50%
    assert r.reduction < 0


def test_non_monotone_baseline_uses_the_first_crossing():
    # log-ppl 5, 3, 4, 2 at 100, 200, 300, 400: dips, rises, falls again.
    tokens, ppl = [100, 200, 300, 400], [e(5), e(3), e(4), e(2)]
    # 3.5 is crossed first on 100->200 at 100 + 100 * (5 - 3.5) / (5 - 3) = 175 (again later, ignored).
    assert tokens_to_reach(tokens, ppl, e(3.5)).tokens == pytest.approx(175)
    # 3 is hit exactly at 200 (and crossed again on 300->400 at 350, ignored).
    assert tokens_to_reach(tokens, ppl, e(3)).tokens == pytest.approx(200)
    # 2.5 is only reached on the last segment: 300 + 100 * (4 - 2.5) / (4 - 2) = 375.
    assert tokens_to_reach(tokens, ppl, e(2.5)).tokens == pytest.approx(375)


def test_reductions_at_every_evaluation():
    found = reductions([1, 2, 3], [100, 200, 300], [e(4.5), e(3.25), e(2)], TOKENS, PPL)
    assert [r.epoch for r in found] == [1, 2, 3]
    assert [r.kind for r in found] == [INTERPOLATED, INTERPOLATED, NEVER_REACHED]
    # 1 - 100/150, 1 - 200/275, 1 - 300/300 (a lower bound of 0).
    assert [r.reduction for r in found] == pytest.approx([1 / 3, 3 / 11, 0.0])


def test_paper_reading_compares_epoch_n_with_baseline_epoch_n_plus_1():
    readings = paper_reading([1, 2, 3], [e(4.5), e(3), e(2)], [1, 2, 3], [e(5), e(4), e(3)])
    # e^4.5 vs baseline epoch 2 e^4: no; e^3 vs epoch 3 e^3: yes (<=); epoch 4 does not exist: unknown.
    assert [r.holds for r in readings] == [False, True, None]
    assert [r.baseline_next for r in readings] == [e(4), e(3), None]
    assert readings[1].saving == pytest.approx(1 / 3)


@pytest.mark.parametrize("tokens, ppl", [([], []), ([100, 100], [5.0, 4.0]), ([200, 100], [5.0, 4.0]),
                                         ([100, 200], [5.0, float("nan")]), ([100, 200], [5.0, 0.0]),
                                         ([0, 100], [5.0, 4.0]), ([100], [5.0, 4.0])])
def test_unusable_baseline_curves_are_rejected(tokens, ppl):
    with pytest.raises(ValueError):
        tokens_to_reach(tokens, ppl, 4.5)


def _reference(tokens, ppl, target, step):
    """Plain dense-grid reference: the first grid point where the log-interpolated curve is <= target."""
    grid = np.arange(tokens[0], tokens[-1] + step, step)
    curve = np.interp(grid, tokens, np.log(ppl))
    below = np.nonzero(curve <= math.log(target) + 1e-12)[0]
    return None if below.size == 0 else grid[below[0]]


def test_matches_a_dense_grid_reference_on_random_curves():
    rng = random.Random(0)
    for _ in range(200):
        tokens = sorted(rng.sample(range(10, 1000), 5))
        ppl = [rng.uniform(2, 50) for _ in tokens]  # arbitrary, usually non-monotone
        target = rng.uniform(2, 50)
        reach, expected = tokens_to_reach(tokens, ppl, target), _reference(tokens, ppl, target, 0.01)
        if expected is None:
            assert reach.kind == NEVER_REACHED
        elif ppl[0] < target:
            assert (reach.kind, reach.tokens) == (BEFORE_FIRST, tokens[0])
        else:
            assert reach.kind == INTERPOLATED
            assert reach.tokens == pytest.approx(expected, abs=0.011)


def test_power_law_interpolation_is_linear_in_log_tokens():
    # log-ppl 5 -> 3 from 100 to 400 tokens: log P = 4 is halfway in log tokens, at sqrt(100 * 400) = 200
    # (the chord in tokens says 250).
    assert tokens_to_reach([100, 400], [e(5), e(3)], e(4), POWER_LAW).tokens == pytest.approx(200)
    assert tokens_to_reach([100, 400], [e(5), e(3)], e(4), LINEAR).tokens == pytest.approx(250)
    # Bounds do not depend on the interpolation.
    assert tokens_to_reach(TOKENS, PPL, e(2.5), POWER_LAW).kind == NEVER_REACHED
    with pytest.raises(ValueError):
        tokens_to_reach(TOKENS, PPL, e(4), "cubic")


def test_the_chord_overstates_one_epoch_apart():
    # The demo's epoch-1 figures (README): baseline 163.0 after one epoch (t tokens), 125.8 after two; T = 1
    # reached 152.7 after one. Chord in (tokens, log ppl): n_b = t (1 + f), f = ln(163/152.7) / ln(163/125.8);
    # a power law through the same two points: n_b = t 2^f.
    f = math.log(163.0 / 152.7) / math.log(163.0 / 125.8)
    [chord] = reductions([1], [1000], [152.7], [1000, 2000], [163.0, 125.8], LINEAR)
    [power] = reductions([1], [1000], [152.7], [1000, 2000], [163.0, 125.8], POWER_LAW)
    assert chord.reduction == pytest.approx(1 - 1 / (1 + f)) and round(100 * chord.reduction, 1) == 20.1
    assert power.reduction == pytest.approx(1 - 2 ** -f) and round(100 * power.reduction, 1) == 16.0


# A baseline that learns like a power law with an irreducible floor, log-perplexity
# L(t) = ln(A t^-a + C), and a student that is the same curve k times faster: P_s(t) = P_b(k t). The true
# reduction is then 1 - 1/k at every point, whatever the curve's shape.
A, ALPHA, FLOOR, SPEED, EPOCH = 400.0, 0.5, 20.0, 1.37, 1000.0  # k t never lands on an evaluation


def _baseline(t):
    return A * t ** -ALPHA + FLOOR


def _reduction_error(evaluations_per_epoch, interpolation=LINEAR, floor=FLOOR):
    """Worst |measured - true| reduction at the student's epoch ends, the baseline evaluated that often."""
    step = EPOCH / evaluations_per_epoch
    b_tokens = [step * (i + 1) for i in range(int(6 * evaluations_per_epoch))]  # six epochs
    b_ppl = [A * t ** -ALPHA + floor for t in b_tokens]
    s_tokens = [EPOCH, 2 * EPOCH, 3 * EPOCH]
    s_ppl = [A * (SPEED * t) ** -ALPHA + floor for t in s_tokens]
    found = reductions([1, 2, 3], s_tokens, s_ppl, b_tokens, b_ppl, interpolation)
    assert all(r.kind == INTERPOLATED for r in found)
    return [r.reduction - (1 - 1 / SPEED) for r in found]


def test_close_evaluations_approach_the_analytic_reduction():
    coarse, fine, dense = _reduction_error(1), _reduction_error(8), _reduction_error(256)
    # The chord overstates (the curve is convex), a lot one epoch apart and little with close evaluations.
    assert all(err > 0 for err in coarse + fine + dense)
    assert max(coarse) > 0.01
    assert max(fine) < 0.002 and max(dense) < 1e-5
    # The error shrinks with the square of the spacing: 8x closer, ~64x smaller (at least 30x here).
    assert all(c / f > 30 for c, f in zip(coarse, fine))


def test_power_law_reading_is_exact_on_a_power_law_and_closer_with_a_floor():
    assert max(abs(err) for err in _reduction_error(1, POWER_LAW, floor=0.0)) < 1e-12
    with_floor, chord = _reduction_error(1, POWER_LAW), _reduction_error(1, LINEAR)
    assert all(0 < p < c for p, c in zip(with_floor, chord))  # still over, by less than the chord


def test_pooled_kind():
    assert pooled_kind([INTERPOLATED, INTERPOLATED]) == INTERPOLATED
    assert pooled_kind([INTERPOLATED, NEVER_REACHED]) == NEVER_REACHED
    assert pooled_kind([BEFORE_FIRST, INTERPOLATED]) == BEFORE_FIRST
    assert pooled_kind([BEFORE_FIRST, NEVER_REACHED]) == MIXED


def test_across_seeds_pools_by_token_count():
    # Seed 0 and 1 at 100 and 200 tokens, seed 2 only at 100 (still running).
    per_seed = {1: reductions([1, 2], [100, 200], [e(4.5), e(3.25)], TOKENS, PPL),
                0: reductions([1, 2], [100, 200], [e(4.0), e(2.5)], TOKENS, PPL),
                2: reductions([1], [100], [e(4.75)], TOKENS, PPL)}
    first, second = across_seeds(per_seed)
    # At 100 tokens n_b = 200, 150, 125 (seeds 0, 1, 2): reductions 1/2, 1/3, 1/5.
    assert list(first.per_seed) == [0, 1, 2] and first.kind == INTERPOLATED
    values = [1 / 2, 1 / 3, 1 / 5]
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    assert first.reduction.mean == pytest.approx(mean)
    assert first.reduction.half_width == pytest.approx(4.302652729749463 * sd / math.sqrt(3))
    assert first.baseline_tokens.mean == pytest.approx((200 + 150 + 125) / 3)
    assert first.tokens_saved == pytest.approx((200 + 150 + 125) / 3 - 100)
    # At 200 tokens: seed 0 never reached (>= 1 - 200/300), seed 1 at 275 tokens: the mean is a lower bound.
    assert second.kind == NEVER_REACHED and list(second.per_seed) == [0, 1]
    assert second.reduction.mean == pytest.approx(((1 - 200 / 300) + (1 - 200 / 275)) / 2)
