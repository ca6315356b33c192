"""The report's "Perplexity across seeds" section: every evaluation point of a superstilled model beside its
baseline, mean and spread over seeds, and the paired difference (same seed: same initialization and data
order) with its 95% t-interval; statistics from pipeline/seed_statistics.py."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import report_markdown as md
from pipeline.report_runs import ModelRuns, number, teacher_on
from pipeline.seed_statistics import CONFIDENCE, Estimate, PairedDifference, estimate, paired_log_difference

METRIC = "val_ppl"
"""The section reads held-out perplexity: the figure a user adopts superstill for."""


@dataclass(frozen=True)
class PairedPoint:
    """One evaluation point (a token count) of a variant and its baseline."""

    tokens: float
    variant: Estimate | None
    """Perplexity over the variant's seeds there; None when no seed has reached it."""
    baseline: Estimate | None
    paired: PairedDifference | None
    """Over the seeds both have there; None when they share none."""


def epoch_label(model: ModelRuns, tokens: float) -> str:
    """Where in training `tokens` falls, in epochs ("1.00" at the end of epoch 1, "0.25" a quarter in)."""
    per_epoch = model.tokens_per_epoch
    if per_epoch:
        return f"{tokens / per_epoch:.2f}"
    event = model.event_at(tokens)
    return f"in {md.plain(event.get('epoch'))}" if event else md.NA


def teacher_cell(model: ModelRuns, tokens: float) -> str:
    """"on" while the teacher term was active at that evaluation (with its weight when logged), else "off"."""
    event = model.event_at(tokens) or {}
    if not teacher_on(event):
        return "off"
    weight = number(event.get("w_teacher"))
    return "on" if weight is None else f"on (w_t={md.weight(weight)})"


def paired_points(variant: ModelRuns, baseline: ModelRuns, key: str = METRIC) -> list[PairedPoint]:
    """At every token count the variant evaluated: both sides' estimates and the paired difference."""
    theirs = dict(baseline.by_tokens(key))
    points = []
    for tokens, ours in variant.by_tokens(key):
        base = theirs.get(tokens, {})
        points.append(PairedPoint(tokens, estimate(list(ours.values())),
                                  estimate(list(base.values())) if base else None,
                                  paired_log_difference(ours, base)))
    return points


def difference_cell(paired: PairedDifference | None) -> str:
    """Mean change in perplexity with its interval (or why there is none)."""
    if paired is None:
        return md.NA
    low_high = paired.interval_percent
    return (f"{md.signed_percent(paired.mean_percent)} "
            f"{md.interval(*(low_high or (None, None)), number=md.signed_percent)}")


def verdict(paired: PairedDifference | None) -> str:
    """Whether the seeds resolve the difference: the interval excludes 0 (or cannot be told)."""
    if paired is None:
        return md.NA
    if paired.interval_percent is None:
        return md.NO_INTERVAL
    low, high = paired.interval_percent
    if high < 0:
        return "lower (interval < 0)"
    return "higher (interval > 0)" if low > 0 else "not resolved (interval holds 0)"


def _per_seed_cell(paired: PairedDifference | None) -> str:
    if paired is None:
        return md.NA
    return md.per_seed({seed: md.signed_percent(value) for seed, value in zip(paired.seeds, paired.percents)})


def _detail_table(variant: ModelRuns, baseline: ModelRuns, points: list[PairedPoint]) -> str:
    rows = []
    for p in points:
        rows.append([md.count(p.tokens), epoch_label(variant, p.tokens), teacher_cell(variant, p.tokens),
                     p.paired.estimate.n if p.paired else 0,
                     md.spread(p.baseline.mean, p.baseline.std) if p.baseline else md.NA,
                     md.spread(p.variant.mean, p.variant.std) if p.variant else md.NA,
                     _per_seed_cell(p.paired), difference_cell(p.paired)])
    headers = ["tokens seen", "epochs", "teacher term", "paired seeds", f"{baseline.name} ppl",
               f"{variant.name} ppl", "change per seed", f"mean change [{CONFIDENCE:.0%} CI]"]
    return f"### {variant.name} vs {baseline.name}, held-out perplexity\n\n" + md.table(headers, rows)


def _summary_row(variant: ModelRuns, baseline: ModelRuns, points: list[PairedPoint]) -> list[str]:
    paired = [p for p in points if p.paired is not None]
    first_epoch = next((p for p in paired if variant.epoch_end(p.tokens) == 1), None)
    last = paired[-1] if paired else None
    return [variant.name, baseline.name, md.seeds(last.paired.seeds) if last else md.NA,
            difference_cell(first_epoch.paired) if first_epoch else md.NA,
            f"{md.count(last.tokens)} tokens: {difference_cell(last.paired)}" if last else md.NA,
            verdict(last.paired) if last else md.NA]


INTRO = f"""## Perplexity across seeds

Held-out perplexity of every superstilled model beside its baseline at each evaluation, matched by tokens
seen (runs of one experiment evaluate at the same token counts). "ppl" is the mean over seeds ± the
sample standard deviation (no ± with one seed). The change is paired by seed (a variant and the baseline
of the same seed share initialization and data order): per seed Δ = ln P_variant − ln P_baseline, the
difference in held-out NLL (nats per token), shown as the change in perplexity exp(Δ) − 1 (negative: the
variant is better). Its mean over seeds comes with a two-sided {CONFIDENCE:.0%} Student-t interval,
mean(Δ) ± t_(n−1) · sd(Δ) / √n, mapped the same way; an interval that excludes 0 is a difference the seeds
resolve. Teacher term: whether the variant's teacher term was active at that evaluation (w_t its weight)."""


def seeds_section(pairs: list[tuple[ModelRuns, ModelRuns]]) -> str:
    """The section for (variant, baseline) pairs; a one-line section when there are none."""
    if not pairs:
        return "## Perplexity across seeds\n\nNo superstilled model with a baseline to compare: nothing to show."
    tables, rows = [], []
    for variant, baseline in pairs:
        points = paired_points(variant, baseline)
        rows.append(_summary_row(variant, baseline, points))
        tables.append(_detail_table(variant, baseline, points))
    headers = ["model", "baseline", "seeds", "change after epoch 1", "change at the last evaluation",
               "there, the interval is"]
    return "\n\n".join([INTRO, md.table(headers, rows)] + tables)
