"""Statistics over seeds: mean, sample standard deviation, Student-t intervals, paired differences.

Pure functions, no I/O, no scipy: the t quantile comes from the exact closed form of Student's t CDF for
an integer number of degrees of freedom (Abramowitz & Stegun 26.7.3 and 26.7.4), inverted by bisection.
Seeds are few (3 in the demo), so the t distribution, not the normal, sets the interval's width: with 3
seeds (2 dof) a 95% interval is mean ± 4.30 s/√3, not ± 1.96 s/√3.

Paired differences are taken in log-perplexity, i.e. in mean NLL (nats per token): per seed
Δ = ln P_variant − ln P_baseline, with the t-interval over seeds on Δ. Shown as a percentage of
perplexity, exp(Δ) − 1, applied to the mean and to both ends of the interval (the mean then reads as the
geometric-mean ratio of perplexities minus 1). Log differences are additive in the loss the runs
minimise and do not depend on which run is the denominator, which percentages of perplexity would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

CONFIDENCE = 0.95
"""The report's intervals: two-sided 95%."""


def t_two_sided_cdf(t: float, dof: int) -> float:
    """P(|T| <= t) for Student's t with `dof` (integer >= 1) degrees of freedom; t >= 0.

    With θ = atan(t / √ν) (A&S 26.7.3/4):
      ν odd:  (2/π) (θ + sinθ Σ_{j=0}^{(ν-3)/2} c_j cos^{2j+1}θ),  c_0 = 1, c_j = c_{j-1} · 2j / (2j + 1)
      ν even: sinθ Σ_{j=0}^{(ν-2)/2} c_j cos^{2j}θ,                 c_0 = 1, c_j = c_{j-1} · (2j − 1) / (2j)
    """
    if dof < 1 or int(dof) != dof:
        raise ValueError(f"degrees of freedom must be an integer >= 1, got {dof}")
    theta = math.atan(t / math.sqrt(dof))
    sin, cos = math.sin(theta), math.cos(theta)
    if dof % 2:
        total, term = 0.0, cos
        for j in range((dof - 1) // 2):  # j = 0 .. (ν-3)/2
            if j:
                term *= cos * cos * (2 * j) / (2 * j + 1)
            total += term
        return 2.0 / math.pi * (theta + sin * total)
    total, term = 0.0, 1.0
    for j in range(dof // 2):  # j = 0 .. (ν-2)/2
        if j:
            term *= cos * cos * (2 * j - 1) / (2 * j)
        total += term
    return sin * total


def t_quantile(dof: int, confidence: float = CONFIDENCE) -> float:
    """t such that P(|T| <= t) = confidence: the half-width multiplier of a two-sided t-interval."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    low, high = 0.0, 1.0
    while t_two_sided_cdf(high, dof) < confidence:  # the CDF rises in t: bracket, then bisect
        low, high = high, 2 * high
    for _ in range(200):
        middle = (low + high) / 2
        if t_two_sided_cdf(middle, dof) < confidence:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * high:
            break
    return (low + high) / 2


@dataclass(frozen=True)
class Estimate:
    """The mean of a few values (one per seed) with its spread and t-interval."""

    mean: float
    n: int
    std: float | None
    """Sample standard deviation (n − 1 in the denominator); None with one value."""
    half_width: float | None
    """t_{n−1} · std / √n: the 95% interval is mean ± half_width; None with one value."""

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width


def estimate(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean, sample std and two-sided t-interval of `values` (at least one)."""
    n = len(values)
    if n == 0:
        raise ValueError("an estimate needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return Estimate(mean, 1, None, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Estimate(mean, n, std, t_quantile(n - 1, confidence) * std / math.sqrt(n))


@dataclass(frozen=True)
class PairedDifference:
    """A variant against its baseline, paired by seed, in log-perplexity (see the module docstring)."""

    seeds: tuple[Hashable, ...]
    log_differences: tuple[float, ...]
    """Δ_s = ln P_variant(s) − ln P_baseline(s), per seed in `seeds` order."""
    estimate: Estimate
    """Over the Δ_s."""

    @property
    def percents(self) -> tuple[float, ...]:
        """exp(Δ_s) − 1 per seed: P_variant / P_baseline − 1 (negative: the variant is better)."""
        return tuple(math.expm1(d) for d in self.log_differences)

    @property
    def mean_percent(self) -> float:
        return math.expm1(self.estimate.mean)

    @property
    def interval_percent(self) -> tuple[float, float] | None:
        e = self.estimate
        return None if e.half_width is None else (math.expm1(e.low), math.expm1(e.high))


def paired_log_difference(variant: Mapping[Hashable, float], baseline: Mapping[Hashable, float],
                          confidence: float = CONFIDENCE) -> PairedDifference | None:
    """Over the seeds both have (sorted); None when they share none. Perplexities must be positive."""
    seeds = tuple(sorted((s for s in variant if s in baseline), key=seed_order))
    if not seeds:
        return None
    differences = tuple(math.log(variant[s]) - math.log(baseline[s]) for s in seeds)
    return PairedDifference(seeds, differences, estimate(differences, confidence))


def seed_order(seed: Hashable) -> tuple[int, int, str]:
    """Sort key for seeds: integers in numeric order, then anything else (None: unknown) by its text."""
    return (0, seed, "") if isinstance(seed, int) else (1, 0, str(seed))
