"""Statistics over seeds against published t-table values, closed forms, a numerically integrated density,
and arithmetic done by hand in the tests."""

import math

import pytest

from pipeline.seed_statistics import estimate, paired_log_difference, t_quantile, t_two_sided_cdf

# Two-sided 95% (one-sided 0.975) critical values as printed in standard t tables.
T_TABLE_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
              10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}


@pytest.mark.parametrize("dof, expected", sorted(T_TABLE_95.items()))
def test_t_quantile_matches_the_printed_table(dof, expected):
    assert t_quantile(dof) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_closed_forms():
    # dof 1 is the Cauchy distribution: P(|T| <= t) = 2 atan(t) / pi, so t = tan(0.95 * pi / 2).
    assert t_quantile(1) == pytest.approx(math.tan(0.95 * math.pi / 2), rel=1e-10)
    # dof 2: P(|T| <= t) = t / sqrt(t^2 + 2) = p  =>  t = p * sqrt(2 / (1 - p^2)).
    for p in (0.5, 0.9, 0.95, 0.99):
        assert t_quantile(2, p) == pytest.approx(p * math.sqrt(2 / (1 - p * p)), rel=1e-10)
    # Many dof: the normal's 1.959964 (and 90%: 1.644854).
    assert t_quantile(100_000) == pytest.approx(1.959964, abs=1e-4)
    assert t_quantile(100_000, 0.90) == pytest.approx(1.644854, abs=1e-4)


def _density(x, dof):
    return (math.gamma((dof + 1) / 2) / (math.sqrt(dof * math.pi) * math.gamma(dof / 2))
            * (1 + x * x / dof) ** (-(dof + 1) / 2))


def _integrated(t, dof, n=2000):
    """P(|T| <= t) by Simpson's rule on the density: 2 * integral from 0 to t."""
    h = t / n
    total = _density(0, dof) + _density(t, dof) + sum((4 if i % 2 else 2) * _density(i * h, dof) for i in range(1, n))
    return 2 * total * h / 3


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 7, 12])
@pytest.mark.parametrize("t", [0.3, 1.0, 2.5, 6.0])
def test_t_cdf_matches_the_integrated_density(dof, t):
    assert t_two_sided_cdf(t, dof) == pytest.approx(_integrated(t, dof), abs=1e-9)


def test_bad_degrees_of_freedom_and_confidence():
    with pytest.raises(ValueError):
        t_two_sided_cdf(1.0, 0)
    with pytest.raises(ValueError):
        t_quantile(3, 1.0)


def test_estimate_by_hand():
    # 1, 2, 6: mean 3; squared deviations 4 + 1 + 9 = 14; sample variance 14 / 2 = 7.
    e = estimate([1.0, 2.0, 6.0])
    assert (e.mean, e.n) == (3.0, 3)
    assert e.std == pytest.approx(math.sqrt(7))
    half = 4.302652729749463 * math.sqrt(7) / math.sqrt(3)  # t_2 from the dof-2 closed form above
    assert (e.low, e.high) == pytest.approx((3 - half, 3 + half))
    single = estimate([5.0])
    assert (single.mean, single.std, single.half_width, single.low, single.high) == (5.0, None, None, None, None)
    with pytest.raises(ValueError):
        estimate([])


def test_paired_log_difference_by_hand():
    # The one-epoch figures: baseline and T = 1 at seeds 0, 1, 2 (a seed only one side has is ignored).
    baseline = {0: 163.0, 1: 194.6, 2: 195.9, 3: 180.0}
    variant = {2: 167.4, 0: 152.7, 1: 162.6}
    paired = paired_log_difference(variant, baseline)
    d = [math.log(152.7 / 163.0), math.log(162.6 / 194.6), math.log(167.4 / 195.9)]
    mean = (d[0] + d[1] + d[2]) / 3
    sd = math.sqrt(((d[0] - mean) ** 2 + (d[1] - mean) ** 2 + (d[2] - mean) ** 2) / 2)
    half = 4.302652729749463 * sd / math.sqrt(3)
    assert paired.seeds == (0, 1, 2)
    assert paired.log_differences == pytest.approx(d)
    assert paired.percents == pytest.approx([152.7 / 163.0 - 1, 162.6 / 194.6 - 1, 167.4 / 195.9 - 1])
    assert [round(100 * p, 1) for p in paired.percents] == [-6.3, -16.4, -14.5]  # as the issue quotes them
    assert paired.mean_percent == pytest.approx(math.exp(mean) - 1)
    assert paired.interval_percent == pytest.approx((math.exp(mean - half) - 1, math.exp(mean + half) - 1))
    # Three seeds this far apart (-6% to -16%) do not resolve the gain at 95%: t_2 = 4.30 widens the interval past 0.
    assert paired.interval_percent[0] < -0.2 and paired.interval_percent[1] > 0


def test_paired_with_one_or_no_shared_seed():
    one = paired_log_difference({0: 90.0, 5: 1.0}, {0: 100.0})
    assert one.seeds == (0,) and one.interval_percent is None
    assert one.mean_percent == pytest.approx(-0.1)
    assert paired_log_difference({1: 90.0}, {0: 100.0}) is None
