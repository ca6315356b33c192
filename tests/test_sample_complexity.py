"""Sample-complexity reduction on hand-made curves whose answers are derived by hand below.

Baseline curves use perplexities e^k so that log-perplexity interpolation lands on round token counts.
"""

import math
import random

import numpy as np
import pytest

from pipeline.sample_complexity import (BEFORE_FIRST, INTERPOLATED, NEVER_REACHED, paper_reading, reductions,
                                        tokens_to_reach)

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
