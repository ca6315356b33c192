"""`pipeline report RUN`: RUN/report.md and RUN/figures/*.png from an experiment directory.

Sections: the runs; final perplexities (the paper's Tables 1 and 2); figures (Figures 2 and 3: per-epoch
perplexity, and the same against tokens seen and wall-clock time); sample-complexity reduction (Table 3)
on held-out and train-subset perplexity, interpolated and the paper's epoch reading side by side; cost
accounting with break-even; notes on whatever was missing. The report is derived entirely from RUN, so
it is rebuilt in place on every call (no --force): figures are drawn into a temporary directory that
replaces RUN/figures when complete, then report.md is replaced atomically.
"""

from __future__ import annotations

import json

from dataclasses import dataclass
from pathlib import Path

from pipeline import __version__
from pipeline import report_markdown as md
from pipeline.errors import UserError
from pipeline.figures import write_figures
from pipeline.report_costs import CostRow, cost_section
from pipeline.report_runs import Experiment, RunResult, load_experiment
from pipeline.sample_complexity import (BEFORE_FIRST, NEVER_REACHED, PaperReading, Reduction, paper_reading,
                                        reductions)
from pipeline.storage import FIGURES, FIGURES_INDEX, atomic_output, atomic_write_text

METRICS = (("val_ppl", "held-out"), ("train_ppl", "train subset"))


@dataclass(frozen=True)
class ReportFiles:
    """What `build_report` wrote."""

    markdown: Path
    figures: list[Path]


@dataclass
class Comparison:
    """A superstilled run against its baseline on one perplexity metric."""

    student: RunResult
    baseline: RunResult
    metric: str
    reductions: list[Reduction]
    readings: list[PaperReading]


def choose_baseline(experiment: Experiment, student: RunResult, name: str | None) -> RunResult | None:
    """--baseline NAME if given; else the baseline with the student's parameter count, else the first baseline."""
    if name is not None:
        for run in experiment.students:
            if run.name == name:
                return run
        known = ", ".join(run.name for run in experiment.students) or "none"
        raise UserError(f"--baseline {name!r}: no run of that name under {experiment.directory / 'students'}; known: {known}")
    baselines = [run for run in experiment.students if run.kind == "baseline"]
    same_size = [run for run in baselines if run.parameters == student.parameters]
    return (same_size or baselines or [None])[0]


def compare(student: RunResult, baseline: RunResult, metric: str, notes: list[str]) -> Comparison | None:
    """Both readings at every evaluation of `student`; None (with a note) when either has no usable curve."""
    ours = student.points("epoch", "tokens_seen", metric)
    theirs = baseline.points("epoch", "tokens_seen", metric)
    if not ours or not theirs:
        notes.append(f"{student.name} vs {baseline.name} ({metric}): no evaluations yet on one side; not compared.")
        return None
    epochs, tokens, values = (list(column) for column in zip(*ours))
    b_epochs, b_tokens, b_values = (list(column) for column in zip(*theirs))
    try:
        found = reductions([int(e) for e in epochs], tokens, values, b_tokens, b_values)
    except ValueError as error:
        notes.append(f"{baseline.name}: unusable {metric} curve ({error}); {student.name} not compared.")
        return None
    readings = paper_reading([int(e) for e in epochs], values, [int(e) for e in b_epochs], b_values)
    return Comparison(student, baseline, metric, found, readings)


def _header(experiment: Experiment) -> str:
    return (f"# superstill report: {experiment.name}\n\n"
            f"Built by superstill {__version__} from `{experiment.directory}`. "
            "Re-run `pipeline report` to refresh it as runs progress.")


def _superstill_cell(run: RunResult) -> str:
    s = run.superstill
    if not s:
        return "—"
    return (f"T={md.plain(s.get('temperature'))}, w_t={md.plain(s.get('w_teacher'))}, "
            f"w_d={md.plain(s.get('w_data'))}, tail={md.plain(s.get('tail'))}, "
            f"until epoch {md.plain(s.get('transition_epoch'))}")


def _runs_section(experiment: Experiment) -> str:
    rows = []
    for run in experiment.runs:
        model = run.info.get("model") or {}
        done = f"{len(run.epochs)} / {md.plain(run.planned_epochs)}"
        rows.append([run.name, run.kind, md.count(run.parameters), md.plain(model.get("n_layer")),
                     md.plain(model.get("d_model")), md.plain(model.get("context")), done, _superstill_cell(run)])
    headers = ["model", "kind", "params", "layers", "d_model", "context", "epochs done / planned", "superstilling"]
    return "## Runs\n\n" + md.table(headers, rows)


def _relative(run: RunResult, baseline: RunResult | None, key: str) -> str:
    """run's value at its last epoch / the baseline's at the same epoch."""
    if baseline is None or run is baseline or not run.epochs:
        return "—" if run is baseline else md.NA
    epoch = run.epochs[-1]["epoch"]
    ours, theirs = run.value_at(epoch, key), baseline.value_at(epoch, key)
    return md.NA if ours is None or theirs is None else md.ratio(ours / theirs)


def _final_section(experiment: Experiment, baseline_name: str | None) -> str:
    rows = []
    for run in experiment.runs:
        baseline = choose_baseline(experiment, run, baseline_name)
        last = run.epochs[-1]["epoch"] if run.epochs else None
        rows.append([run.name, run.kind, md.count(run.parameters), md.plain(last),
                     md.count(run.last("tokens_seen")), md.ppl(run.last("train_ppl")), md.ppl(run.last("val_ppl")),
                     _relative(run, baseline, "train_ppl"), _relative(run, baseline, "val_ppl")])
    headers = ["model", "kind", "params", "epochs", "tokens seen", "final train ppl", "final val ppl",
               "train vs baseline", "val vs baseline"]
    return ("## Final perplexity\n\nThe paper's Tables 1 and 2. \"vs baseline\" divides by the baseline's "
            "perplexity at the same epoch (below 1 is better than the baseline).\n\n" + md.table(headers, rows))


def _figures_section(names: list[str]) -> str:
    if not names:
        return "## Figures\n\nNo evaluations yet: no figures."
    return "## Figures\n\n" + "\n\n".join(f"![{name}](figures/{name})" for name in names)


def _baseline_cell(r: Reduction) -> str:
    if r.kind == NEVER_REACHED:
        return f"> {md.count(r.baseline_tokens)} (never reached)"
    if r.kind == BEFORE_FIRST:
        return f"≤ {md.count(r.baseline_tokens)} (before its first evaluation)"
    return md.count(r.baseline_tokens)


def reduction_cell(r: Reduction) -> str:
    """The reduction with its bound: ">=" when never reached, "<=" when reached before the first evaluation."""
    prefix = {NEVER_REACHED: "≥ ", BEFORE_FIRST: "≤ "}.get(r.kind, "")
    return prefix + md.percent(r.reduction)


def _reading_cells(reading: PaperReading) -> list[str]:
    holds = {True: "yes", False: "no", None: md.NA}[reading.holds]
    saving = f"1/{reading.epoch + 1} = {md.percent(reading.saving)}" if reading.holds else "—"
    return [md.ppl(reading.baseline_next), holds, saving]


def _comparison_table(c: Comparison) -> str:
    active = {e["epoch"]: bool(e.get("superstill")) for e in c.student.epochs}
    rows = [[r.epoch, "on" if active.get(r.epoch) else "off", md.count(r.tokens), md.ppl(r.perplexity),
             _baseline_cell(r), reduction_cell(r)] + _reading_cells(reading)
            for r, reading in zip(c.reductions, c.readings)]
    headers = ["epoch n", "teacher term", "tokens n_s", "ppl P", "baseline tokens n_b to reach P",
               "reduction 1 − n_s/n_b", "paper: baseline ppl at epoch n+1", "P ≤ that?", "paper saving 1/(n+1)"]
    return f"### {c.student.name} vs {c.baseline.name}, {dict(METRICS)[c.metric]} perplexity\n\n" + md.table(headers, rows)


def _summary_table(comparisons: list[Comparison]) -> str:
    """One row per comparison: the reading at the last evaluation, and where the paper's reading holds."""
    rows = []
    for c in comparisons:
        last, held = c.reductions[-1], [str(r.epoch) for r in c.readings if r.holds]
        rows.append([c.student.name, c.baseline.name, dict(METRICS)[c.metric], last.epoch, reduction_cell(last),
                     ", ".join(held) or "none"])
    headers = ["student", "baseline", "perplexity", "last epoch", "reduction there", "epochs n with P ≤ P_b(n+1)"]
    return md.table(headers, rows)


SAMPLE_COMPLEXITY_INTRO = """## Sample-complexity reduction

The paper's Table 3. For each evaluation of a superstilled run (n_s tokens seen, perplexity P), n_b is
where the baseline's curve FIRST reaches perplexity ≤ P, interpolating linearly in (tokens,
log-perplexity) between its evaluations; reduction = 1 − n_s / n_b. Nothing is extrapolated: if the
baseline never gets to P, n_b is beyond its last evaluation and the reduction is a lower bound (≥); if
the baseline was already below P at its first evaluation, n_b is taken as that evaluation and the
reduction is an upper bound (≤, negative when the superstilled run needed more tokens). Beside it, the
paper's own reading: after n epochs, does the superstilled run reach a perplexity the baseline needs
n + 1 epochs for (P ≤ P_b(n+1))? If so it saves one epoch in n + 1."""


def sample_complexity_section(experiment: Experiment, baseline_name: str | None,
                              notes: list[str]) -> tuple[str, list[Comparison]]:
    """The section's text and every comparison made (both metrics), for the cost accounting."""
    students = [run for run in experiment.students if run.kind == "student"]
    if not students:
        return "## Sample-complexity reduction\n\nNo superstilled students in this run: nothing to compare.", []
    parts, comparisons = [SAMPLE_COMPLEXITY_INTRO], []
    for metric, _ in METRICS:
        for student in students:
            baseline = choose_baseline(experiment, student, baseline_name)
            usable = baseline is not None and baseline is not student
            c = compare(student, baseline, metric, notes) if usable else None
            if c is not None:
                comparisons.append(c)
                parts.append(_comparison_table(c))
    if comparisons:
        parts.insert(1, _summary_table(comparisons))
    else:
        parts = ["## Sample-complexity reduction\n\nSkipped: no baseline run with evaluations to compare "
                 "against (train one with kind \"baseline\" under students/, or pass --baseline NAME)."]
    return "\n\n".join(parts), comparisons


def _cost_rows(comparisons: list[Comparison]) -> list[CostRow]:
    """Held-out comparisons only: the last evaluation and the latest epoch where the paper's reading holds."""
    rows = []
    for c in comparisons:
        if c.metric == "val_ppl":
            holding = [reading for reading in c.readings if reading.holds]
            rows.append(CostRow(c.student, c.baseline, c.reductions[-1], holding[-1] if holding else None))
    return rows


def _notes_section(notes: list[str]) -> str:
    return "## Notes\n\n" + ("\n".join(f"- {note}" for note in notes) if notes else "Nothing missing.")


def render_report(experiment: Experiment, figure_names: list[str], baseline_name: str | None = None) -> str:
    """The whole report.md text."""
    notes = list(experiment.notes)
    complexity, comparisons = sample_complexity_section(experiment, baseline_name, notes)
    sections = [_header(experiment), _runs_section(experiment), _final_section(experiment, baseline_name),
                _figures_section(figure_names), complexity, cost_section(experiment, _cost_rows(comparisons)),
                _notes_section(notes)]
    return "\n\n".join(sections) + "\n"


def build_report(location: str, baseline_name: str | None = None) -> ReportFiles:
    """Write RUN/figures/*.png and RUN/report.md; UserError if RUN is missing, empty, or --baseline unknown."""
    experiment = load_experiment(location)
    if baseline_name is not None and experiment.students:
        choose_baseline(experiment, experiment.students[0], baseline_name)  # an unknown name fails before drawing
    figures_dir = experiment.directory / "figures"
    with atomic_output(figures_dir, force=True, option="RUN/figures", kinds=(FIGURES,)) as temp:
        names = write_figures(experiment.runs, Path(temp), experiment.name)
        index = {"kind": "superstill.figures", "figures": names}
        (Path(temp) / FIGURES_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        text = render_report(experiment, names, baseline_name)  # inside: a failure keeps the old figures
    report = experiment.directory / "report.md"
    atomic_write_text(report, text)
    return ReportFiles(report, [figures_dir / name for name in names])
