"""Sample-complexity reduction: how many fewer training tokens a superstilled run needs than its baseline.

Pure functions over evaluation curves (tokens seen, perplexity), no I/O, so every number in the report
can be checked by hand.

The interpolated reading. For an evaluation of the superstilled run at n_s tokens with perplexity P, find
n_b, the tokens at which the baseline FIRST reaches P (perplexity <= P), and report 1 - n_s / n_b.
Between two baseline evaluations (t0, p0) and (t1, p1) the curve is interpolated linearly in
(tokens, log-perplexity), i.e. linearly in the NLL, i.e. geometrically in perplexity (`LINEAR`):

    log p(t) = log p0 + (t - t0) / (t1 - t0) * (log p1 - log p0)

We interpolate the log because the geometric mean never exceeds the arithmetic one: on the convex,
falling curves training produces, the chord in log space lies at or below the chord in perplexity space.

Its bias. Training curves are convex in tokens even in log-perplexity (a power law p = A t^-a is), so
the chord lies ABOVE the true curve between two evaluations: it reaches P later than the baseline really
does, n_b comes out too large, and the reduction is OVERSTATED. The error grows with the square of the
spacing: with evaluations one epoch apart it is large (the demo's 20.1% after epoch 1 is 16.0% under a
power law through the same two points), with several evaluations per epoch it is small. `POWER_LAW`
interpolates linearly in (log tokens, log perplexity) instead: exact on a power law, and on curves that
flatten faster (a power law plus an irreducible loss) it still overstates, by less than the chord. The
report uses the chord between close evaluations and shows the power-law reading beside it: their gap
bounds how much the interpolation can matter.

Outside the baseline's evaluations nothing is extrapolated:
- never reached: the baseline's curve stays above P up to its last evaluation n_last. The true n_b is
  beyond n_last, so 1 - n_s / n_last is a LOWER bound on the reduction ("never_reached", shown ">=").
- reached before the first evaluation: the baseline's curve is taken to start at (0, +inf) and to be
  unknown until its first evaluation (t0, p0). If p0 < P the baseline got there at some n_b <= t0; we use
  n_b = t0, so 1 - n_s / t0 is an UPPER bound on the reduction ("before_first", shown "<="); it is
  negative when the superstilled run needed more tokens than the baseline's first evaluation.
  p0 == P exactly is an ordinary hit at t0.

Across seeds (`across_seeds`): each seed's superstilled run is compared with the baseline of the same
seed, then the reductions are averaged with a t-interval (pipeline/seed_statistics.py). The mean of
lower bounds is a lower bound, of upper bounds an upper bound; lower and upper bounds together bound
nothing ("mixed").

The paper's own reading is epoch-based: "after n epochs the superstilled run reaches a perplexity the
baseline needs n + 1 epochs for", i.e. P_s(n) <= P_b(n + 1), which saves one epoch in n + 1: 1 / (n + 1).
`paper_reading` reports that beside the interpolated reading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

from pipeline.seed_statistics import Estimate, estimate, seed_order

# How a baseline reach was established; see the module docstring. MIXED: seeds with bounds both ways.
INTERPOLATED, NEVER_REACHED, BEFORE_FIRST, MIXED = "interpolated", "never_reached", "before_first", "mixed"
# How the baseline's curve is read between two evaluations; see the module docstring.
LINEAR, POWER_LAW = "linear", "power_law"


@dataclass(frozen=True)
class Reach:
    """Where the baseline first reaches a target perplexity."""

    tokens: float
    """n_b: tokens at the crossing; the last evaluation (never_reached) or the first (before_first)."""
    kind: str
    """INTERPOLATED (an estimate on the interpolated curve), NEVER_REACHED or BEFORE_FIRST."""


@dataclass(frozen=True)
class Reduction:
    """One evaluation of the superstilled run matched against the baseline."""

    epoch: int
    """Epoch of the superstilled evaluation (1-based)."""
    tokens: float
    """n_s: tokens the superstilled run had seen."""
    perplexity: float
    """P: its perplexity at that point."""
    baseline_tokens: float
    """n_b as in `Reach.tokens`."""
    reduction: float
    """1 - n_s / n_b; a lower bound if kind is NEVER_REACHED, an upper bound if BEFORE_FIRST."""
    kind: str
    """How n_b was found (see `Reach.kind`)."""

    @property
    def tokens_saved(self) -> float:
        """n_b - n_s (same bound direction as `reduction`)."""
        return self.baseline_tokens - self.tokens


@dataclass(frozen=True)
class PaperReading:
    """The paper's epoch reading at one superstilled epoch n: is P_s(n) <= P_b(n + 1)?"""

    epoch: int
    """n."""
    perplexity: float
    """P_s(n)."""
    baseline_next: float | None
    """P_b(n + 1), or None when the baseline has no epoch n + 1."""
    holds: bool | None
    """P_s(n) <= P_b(n + 1); None when it cannot be told."""

    @property
    def saving(self) -> float:
        """The implied saving, one epoch in n + 1 (meaningful only when `holds`)."""
        return 1.0 / (self.epoch + 1)


def _check_curve(tokens: Sequence[float], perplexity: Sequence[float]) -> None:
    """A baseline curve must be non-empty, strictly increasing in tokens, with finite positive perplexities."""
    if len(tokens) != len(perplexity) or not tokens:
        raise ValueError(f"curve needs equal, non-zero numbers of tokens and perplexities, got {len(tokens)} and {len(perplexity)}")
    if any(b <= a for a, b in zip(tokens, tokens[1:])) or tokens[0] <= 0:
        raise ValueError(f"curve tokens must be positive and strictly increasing, got {list(tokens)}")
    if not all(math.isfinite(p) and p > 0 for p in perplexity):
        raise ValueError(f"curve perplexities must be finite and positive, got {list(perplexity)}")


def tokens_to_reach(tokens: Sequence[float], perplexity: Sequence[float], target: float,
                    interpolation: str = LINEAR) -> Reach:
    """Tokens at which the curve FIRST has perplexity <= target (log-perplexity against tokens for LINEAR,
    against log tokens for POWER_LAW)."""
    _check_curve(tokens, perplexity)
    if interpolation not in (LINEAR, POWER_LAW):
        raise ValueError(f"interpolation must be {LINEAR!r} or {POWER_LAW!r}, got {interpolation!r}")
    if not (math.isfinite(target) and target > 0):
        raise ValueError(f"target perplexity must be finite and positive, got {target}")
    if perplexity[0] <= target:
        return Reach(float(tokens[0]), INTERPOLATED if perplexity[0] == target else BEFORE_FIRST)
    for i in range(1, len(tokens)):
        if perplexity[i] <= target:
            # Every earlier evaluation is above target, so the first crossing is inside segment i-1 -> i.
            l0, l1, lt = math.log(perplexity[i - 1]), math.log(perplexity[i]), math.log(target)
            fraction = (l0 - lt) / (l0 - l1)  # of the way from evaluation i-1 to i, in log perplexity
            t0, t1 = tokens[i - 1], tokens[i]
            if interpolation == POWER_LAW:
                return Reach(t0 * (t1 / t0) ** fraction, INTERPOLATED)
            return Reach(t0 + (t1 - t0) * fraction, INTERPOLATED)
    return Reach(float(tokens[-1]), NEVER_REACHED)


def reductions(epochs: Sequence[int], tokens: Sequence[float], perplexity: Sequence[float],
               baseline_tokens: Sequence[float], baseline_perplexity: Sequence[float],
               interpolation: str = LINEAR) -> list[Reduction]:
    """The interpolated reading at every evaluation of the superstilled run."""
    out = []
    for epoch, n_s, target in zip(epochs, tokens, perplexity):
        reach = tokens_to_reach(baseline_tokens, baseline_perplexity, target, interpolation)
        out.append(Reduction(int(epoch), float(n_s), float(target), reach.tokens,
                             1.0 - n_s / reach.tokens, reach.kind))
    return out


def paper_reading(epochs: Sequence[int], perplexity: Sequence[float],
                  baseline_epochs: Sequence[int], baseline_perplexity: Sequence[float]) -> list[PaperReading]:
    """P_s(n) <= P_b(n + 1) at every epoch n of the superstilled run."""
    by_epoch = dict(zip(baseline_epochs, baseline_perplexity))
    out = []
    for epoch, value in zip(epochs, perplexity):
        following = by_epoch.get(epoch + 1)
        holds = None if following is None else bool(value <= following)
        out.append(PaperReading(int(epoch), float(value), following, holds))
    return out


def pooled_kind(kinds: Sequence[str]) -> str:
    """What the mean of several readings is: exact, a lower bound, an upper bound, or MIXED."""
    lower, upper = NEVER_REACHED in kinds, BEFORE_FIRST in kinds
    return MIXED if lower and upper else NEVER_REACHED if lower else BEFORE_FIRST if upper else INTERPOLATED


@dataclass(frozen=True)
class SeedReductions:
    """The reduction at one evaluation point (a token count) over the seeds that reached it."""

    tokens: float
    per_seed: dict[Hashable, Reduction]
    """Each seed's reading against the baseline of the same seed, in seed order."""
    reduction: Estimate
    """Mean and t-interval of the per-seed reductions 1 - n_s / n_b."""
    baseline_tokens: Estimate
    """Mean n_b."""
    kind: str
    """`pooled_kind` of the per-seed kinds: how to read the mean (and its interval)."""

    @property
    def tokens_saved(self) -> float:
        """Mean n_b - n_s (same bound direction as `kind`)."""
        return self.baseline_tokens.mean - self.tokens


def across_seeds(per_seed: Mapping[Hashable, Sequence[Reduction]]) -> list[SeedReductions]:
    """Per token count seen by any seed, the seeds' readings pooled (see the module docstring)."""
    by_tokens: dict[float, dict[Hashable, Reduction]] = {}
    for seed in sorted(per_seed, key=seed_order):
        for r in per_seed[seed]:
            by_tokens.setdefault(r.tokens, {})[seed] = r
    out = []
    for tokens in sorted(by_tokens):
        found = by_tokens[tokens]
        values = list(found.values())
        out.append(SeedReductions(tokens, found, estimate([r.reduction for r in values]),
                                  estimate([r.baseline_tokens for r in values]),
                                  pooled_kind([r.kind for r in values])))
    return out
