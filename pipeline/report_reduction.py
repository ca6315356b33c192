"""The report's "Sample-complexity reduction" section (the paper's Table 3), per seed and over seeds.

Each seed's superstilled run is read against the baseline of the same seed on the fine-grained curves
(every evaluation, several per epoch when the runs log them), then pooled over seeds with a t-interval;
the numbers come from pipeline/sample_complexity.py and pipeline/seed_statistics.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

from pipeline import report_markdown as md
from pipeline.report_runs import ModelRuns, RunResult
from pipeline.report_seeds import epoch_label, teacher_cell
from pipeline.sample_complexity import (BEFORE_FIRST, INTERPOLATED, LINEAR, MIXED, NEVER_REACHED, POWER_LAW,
                                        PaperReading, Reduction, SeedReductions, across_seeds, paper_reading,
                                        reductions)
from pipeline.seed_statistics import CONFIDENCE

METRICS = (("val_ppl", "held-out"), ("train_ppl", "train subset"))


@dataclass
class Comparison:
    """A superstilled model against its baseline on one perplexity metric, seed by seed and pooled."""

    student: ModelRuns
    baseline: ModelRuns
    metric: str
    points: list[SeedReductions]
    """At each of the student's evaluations: the reduction read with the chord (LINEAR), pooled over seeds."""
    power_law: list[SeedReductions]
    """The same read with POWER_LAW interpolation, same order: how much the interpolation matters."""
    readings: dict[Hashable, list[PaperReading]]
    """Per seed, the paper's epoch reading at each of the student's epochs."""

    def paper_holds(self, epoch: int) -> list[bool | None]:
        """P_s(n) <= P_b(n + 1) at epoch n, one entry per seed that has epoch n."""
        return [r.holds for readings in self.readings.values() for r in readings if r.epoch == epoch]

    @property
    def epochs_held(self) -> list[int]:
        """Epochs n at which the paper's reading holds on every seed."""
        epochs = sorted({r.epoch for readings in self.readings.values() for r in readings})
        return [n for n in epochs if all(h is True for h in self.paper_holds(n))]

    @property
    def after_first_epoch(self) -> SeedReductions | None:
        return next((p for p in self.points if self.student.epoch_end(p.tokens) == 1), None)


def _seed_readings(run: RunResult, base: RunResult, metric: str) -> tuple[list[Reduction], list[Reduction],
                                                                             list[PaperReading]]:
    """One seed: both interpolations at every evaluation, and the paper's reading at every epoch; ValueError
    (from sample_complexity) when the baseline's curve is unusable."""
    epochs, tokens, values = (list(c) for c in zip(*run.points("epoch", "tokens_seen", metric, fine=True)))
    b_tokens, b_values = base.curve("tokens_seen", metric, fine=True)
    epochs = [int(e) for e in epochs]
    linear = reductions(epochs, tokens, values, b_tokens, b_values, LINEAR)
    power = reductions(epochs, tokens, values, b_tokens, b_values, POWER_LAW)
    ours, theirs = run.points("epoch", metric), base.points("epoch", metric)
    readings = paper_reading([int(e) for e, _ in ours], [v for _, v in ours],
                             [int(e) for e, _ in theirs], [v for _, v in theirs])
    return linear, power, readings


def compare(student: ModelRuns, baseline: ModelRuns, metric: str, notes: list[str]) -> Comparison | None:
    """Every seed the two share; None (with notes) when no seed can be compared."""
    linear, power, readings = {}, {}, {}
    for run in student.runs:
        base, label = baseline.run(run.seed), f"{student.name} seed {md.plain(run.seed)}"
        if base is None:
            notes.append(f"{label}: no {baseline.name} run of that seed to pair with; left out of the statistics.")
        elif not run.points("tokens_seen", metric, fine=True) or not base.points("tokens_seen", metric, fine=True):
            notes.append(f"{label} vs {baseline.name} ({metric}): no evaluations yet on one side; not compared.")
        else:
            try:
                linear[run.seed], power[run.seed], readings[run.seed] = _seed_readings(run, base, metric)
            except ValueError as error:
                notes.append(f"{baseline.name} seed {md.plain(run.seed)}: unusable {metric} curve ({error}); "
                             f"{label} not compared.")
    if not linear:
        return None
    return Comparison(student, baseline, metric, across_seeds(linear), across_seeds(power), readings)


BOUND_PREFIX = {NEVER_REACHED: "≥ ", BEFORE_FIRST: "≤ "}


def _one_reduction(r: Reduction) -> str:
    return BOUND_PREFIX.get(r.kind, "") + md.percent(r.reduction)


def reduction_cell(p: SeedReductions, with_interval: bool = True) -> str:
    """Mean reduction with its bound and interval: ">=" when the baseline never reached P (a lower bound),
    "<=" when it was there by its first evaluation (an upper bound); mixed bounds give no mean."""
    if p.kind == MIXED:
        return "mixed bounds (see per seed)"
    text = BOUND_PREFIX.get(p.kind, "") + md.percent(p.reduction.mean)
    return f"{text} {md.interval(p.reduction.low, p.reduction.high)}" if with_interval else text


def _baseline_cell(p: SeedReductions) -> str:
    if p.kind == NEVER_REACHED:
        return f"> {md.count(p.baseline_tokens.mean)} (never reached)"
    if p.kind == BEFORE_FIRST:
        return f"≤ {md.count(p.baseline_tokens.mean)} (before its first evaluation)"
    return md.count(p.baseline_tokens.mean) + (" (bounds both ways)" if p.kind == MIXED else "")


def _paper_cell(c: Comparison, tokens: float) -> str:
    """At an epoch end n: does P_s(n) <= P_b(n + 1) hold (on how many seeds)? "—" inside an epoch."""
    epoch = c.student.epoch_end(tokens)
    if epoch is None:
        return "—"
    holds = [h for h in c.paper_holds(epoch) if h is not None]
    if not holds:
        return md.NA
    if all(holds):
        return f"yes: 1/{epoch + 1} = {md.percent(1 / (epoch + 1))}"
    return "no" if not any(holds) else f"on {sum(holds)} of {len(holds)} seeds"


def _comparison_table(c: Comparison) -> str:
    rows = []
    for p, q in zip(c.points, c.power_law):
        perplexity = [r.perplexity for r in p.per_seed.values()]
        mean = sum(perplexity) / len(perplexity)
        per_seed = md.per_seed({seed: _one_reduction(r) for seed, r in p.per_seed.items()})
        rows.append([md.count(p.tokens), epoch_label(c.student, p.tokens), teacher_cell(c.student, p.tokens),
                     len(p.per_seed), md.ppl(mean), _baseline_cell(p), per_seed, reduction_cell(p),
                     reduction_cell(q, with_interval=False), _paper_cell(c, p.tokens)])
    headers = ["tokens n_s", "epochs", "teacher term", "seeds", "ppl P (mean)", "baseline tokens n_b to reach P (mean)",
               "reduction 1 − n_s/n_b per seed", f"mean [{CONFIDENCE:.0%} CI]", "power-law reading (mean)",
               "paper: P ≤ P_b(n+1)? saving 1/(n+1)"]
    title = f"### {c.student.name} vs {c.baseline.name}, {dict(METRICS)[c.metric]} perplexity"
    return title + "\n\n" + md.table(headers, rows)


def interpolation_gap(c: Comparison) -> float | None:
    """Largest |chord − power-law| reduction over the seeds' interpolated readings (both bounds agree)."""
    gaps = [abs(r.reduction - q.per_seed[seed].reduction)
            for p, q in zip(c.points, c.power_law) for seed, r in p.per_seed.items() if r.kind == INTERPOLATED]
    return max(gaps) if gaps else None


def evaluations_per_epoch(model: ModelRuns) -> int | None:
    """How many evaluations the lowest seed logged in its first epoch (1 for runs with epoch events only)."""
    per_epoch = model.tokens_per_epoch
    if per_epoch is None:
        return None
    return len([t for t, _ in model.first.points("tokens_seen", "val_ppl", fine=True) if t <= per_epoch])


def _summary_table(comparisons: list[Comparison]) -> str:
    rows = []
    for c in comparisons:
        first, last, gap = c.after_first_epoch, c.points[-1], interpolation_gap(c)
        rows.append([c.student.name, c.baseline.name, c.student.architecture, dict(METRICS)[c.metric],
                     md.seeds(list(c.readings)),
                     md.plain(evaluations_per_epoch(c.baseline)), reduction_cell(first) if first else md.NA,
                     f"{md.count(last.tokens)} tokens: {reduction_cell(last)}",
                     md.NA if gap is None else f"{100 * gap:.1f} points",
                     ", ".join(map(str, c.epochs_held)) or "none"])
    headers = ["student", "baseline", "architecture", "perplexity", "seeds", "baseline evaluations per epoch",
               "reduction after epoch 1", "at the last evaluation", "chord vs power-law (largest gap)",
               "epochs n with P ≤ P_b(n+1) on every seed"]
    return md.table(headers, rows)


INTRO = f"""## Sample-complexity reduction

The paper's Table 3. For each evaluation of a superstilled run (n_s tokens seen, perplexity P), n_b is
where the baseline of the SAME SEED first reaches perplexity ≤ P on its curve of every evaluation
(several per epoch when the runs log them), interpolating linearly in (tokens, log-perplexity) between
the two evaluations that bracket P; reduction = 1 − n_s / n_b. Each seed is read on its own, then the
reductions are averaged with a two-sided {CONFIDENCE:.0%} Student-t interval over seeds.

The chord's bias: training curves are convex in tokens even in log-perplexity, so the chord between two
evaluations lies above the true curve, puts n_b too late and OVERSTATES the reduction. The error grows
with the square of the spacing: with evaluations one epoch apart it can be several points, with several
evaluations per epoch it is small. The "power-law reading" interpolates linearly in (log tokens,
log-perplexity) instead (exact on a power law; still an overstatement, a smaller one, on curves that
flatten faster): the gap between the two shows how much the interpolation matters here (summary column).

Nothing is extrapolated: if the baseline never gets to P, n_b is beyond its last evaluation and the
reduction is a lower bound (≥); if the baseline was already below P at its first evaluation, n_b is taken
as that evaluation and the reduction is an upper bound (≤, negative when the superstilled run needed more
tokens). A mean over seeds is a bound when any seed's reading is (lower and upper bounds together: none).
Beside it, the paper's own reading: after n epochs, does the superstilled run reach a perplexity the
baseline needs n + 1 epochs for (P ≤ P_b(n+1))? If so it saves one epoch in n + 1."""


def compare_all(students: list[ModelRuns], choose, notes: list[str]) -> list[Comparison]:
    """Every superstilled model against its baseline (`choose(model)`), held-out first, then train subset."""
    comparisons = []
    for metric, _ in METRICS:
        for student in students:
            baseline = choose(student)
            if baseline is not None and baseline is not student:
                found = compare(student, baseline, metric, notes)
                comparisons += [found] if found else []
    return comparisons


def reduction_section(comparisons: list[Comparison], any_students: bool) -> str:
    """The section's text."""
    if not any_students:
        return "## Sample-complexity reduction\n\nNo superstilled students in this run: nothing to compare."
    if not comparisons:
        return ("## Sample-complexity reduction\n\nSkipped: no baseline run with evaluations to compare "
                "against (train one with kind \"baseline\" under students/, or pass --baseline NAME).")
    return "\n\n".join([INTRO, _summary_table(comparisons)] + [_comparison_table(c) for c in comparisons])
