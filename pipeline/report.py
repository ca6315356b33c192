"""`pipeline report RUN`: RUN/report.md and RUN/figures/*.png from an experiment directory.

Sections: the runs; final perplexities (the paper's Tables 1 and 2); figures (Figures 2 and 3: perplexity
against epochs, tokens seen and wall-clock time, mean and spread over seeds, and the reduction against
tokens seen with its interval); held-out perplexity across seeds with paired differences and their 95%
intervals; sample-complexity reduction (Table 3) per seed and over seeds; when and why each run's
teacher-weight schedule switched; cost accounting with break-even; notes on whatever was missing. The
report is derived entirely from RUN, so it is rebuilt in place on every call (no --force): figures are
drawn into a temporary directory that replaces RUN/figures when complete, then report.md is replaced
atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline import __version__
from pipeline import report_markdown as md
from pipeline.errors import UserError
from pipeline.figures import write_figures
from pipeline.report_costs import CostRow, cost_section, per_seed_mean
from pipeline.report_reduction import Comparison, compare_all, reduction_section
from pipeline.report_runs import Experiment, ModelRuns, load_experiment, number
from pipeline.report_seeds import seeds_section
from pipeline.seed_statistics import estimate, paired_log_difference
from pipeline.storage import FIGURES, FIGURES_INDEX, atomic_output, atomic_write_text


@dataclass(frozen=True)
class ReportFiles:
    """What `build_report` wrote."""

    markdown: Path
    figures: list[Path]


def choose_baseline(experiment: Experiment, student: ModelRuns, name: str | None) -> ModelRuns | None:
    """--baseline NAME if given; else the baseline of the student's own architecture: the same model spec,
    else the same architecture and parameter count, else the same parameter count, else the first baseline."""
    if name is not None:
        for model in experiment.students:
            if model.name == name:
                return model
        known = ", ".join(model.name for model in experiment.students) or "none"
        raise UserError(f"--baseline {name!r}: no run of that name under {experiment.directory / 'students'}; known: {known}")
    baselines = [model for model in experiment.students if model.kind == "baseline"]
    same_spec = [model for model in baselines if model.spec and model.spec == student.spec]
    same_size = [model for model in baselines if model.parameters == student.parameters]
    same_kind = [model for model in same_size if model.architecture == student.architecture]
    return (same_spec or same_kind or same_size or baselines or [None])[0]


def _header(experiment: Experiment) -> str:
    return (f"# superstill report: {experiment.name}\n\n"
            f"Built by superstill {__version__} from `{experiment.directory}`. "
            "Re-run `pipeline report` to refresh it as runs progress.")


def _schedule_text(s: dict) -> str:
    """The teacher weight's schedule as run.json records it (pipeline/distillation.py)."""
    schedule = s.get("schedule", "step")
    if schedule == "step":
        return f"until epoch {md.plain(s.get('transition_epoch'))}"
    if schedule == "linear":
        return (f"linear: full for {md.plain(s.get('decay_start'))} epochs, then to 0 over "
                f"{md.plain(s.get('decay_epochs'))}")
    return f"{schedule} schedule"


def _superstill_cell(model: ModelRuns) -> str:
    s = model.first.superstill
    if not s:
        return "—"
    return (f"T={md.plain(s.get('temperature'))}, w_t={md.plain(s.get('w_teacher'))}, "
            f"w_d={md.plain(s.get('w_data'))}, tail={md.plain(s.get('tail'))}, {_schedule_text(s)}")


def _epochs_done(model: ModelRuns) -> str:
    """"3 / 3", or per seed "3, 3, 1 / 3" while seeds are at different epochs."""
    done = sorted({len(run.epochs) for run in model.runs})
    shown = str(done[0]) if len(done) == 1 else ", ".join(str(len(run.epochs)) for run in model.runs)
    return f"{shown} / {md.plain(model.first.planned_epochs)}"


def _runs_section(experiment: Experiment) -> str:
    rows = []
    for model in experiment.models:
        info = model.spec
        options = info.get("options") if isinstance(info.get("options"), dict) else {}
        rows.append([model.name, model.kind, model.architecture, md.seeds(model.seeds), md.count(model.parameters),
                     md.plain(info.get("n_layer", options.get("num_hidden_layers"))),
                     md.plain(info.get("d_model", options.get("hidden_size"))), md.plain(info.get("context")),
                     _epochs_done(model), _superstill_cell(model)])
    headers = ["model", "kind", "architecture", "seeds", "params", "layers", "width", "context",
               "epochs done / planned", "superstilling"]
    planned = (f" Seeds planned: {md.seeds(experiment.planned_seeds)}." if experiment.planned_seeds is not None
               else "")
    return "## Runs\n\n" + f"One row per model; each seed is a separate run.{planned}\n\n" + md.table(headers, rows)


def final_epoch(model: ModelRuns) -> int | None:
    """The latest epoch every seed of `model` has finished: "final" figures compare seeds at the same point."""
    lasts = [run.epochs[-1]["epoch"] for run in model.runs if run.epochs]
    return min(lasts) if len(lasts) == len(model.runs) else None


def _at_epoch(model: ModelRuns, epoch: int | None, key: str) -> str:
    values = list(model.by_epoch(key).get(epoch, {}).values()) if epoch is not None else []
    return md.spread(*_mean_std(values))


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample std over seeds (None, None without values; std None with one)."""
    if not values:
        return None, None
    e = estimate(values)
    return e.mean, e.std


def _relative(model: ModelRuns, baseline: ModelRuns | None, epoch: int | None, key: str) -> str:
    """Paired ratio to the baseline at the same epoch: exp(mean Δ) over seeds, with its interval."""
    if model is baseline:
        return "—"
    if baseline is None or epoch is None:
        return md.NA
    paired = paired_log_difference(model.by_epoch(key).get(epoch, {}), baseline.by_epoch(key).get(epoch, {}))
    if paired is None:
        return md.NA
    ratio = md.ratio(1 + paired.mean_percent)
    low_high = paired.interval_percent
    return ratio if low_high is None else f"{ratio} {md.interval(1 + low_high[0], 1 + low_high[1], md.ratio)}"


def _final_section(experiment: Experiment, baseline_name: str | None) -> str:
    rows = []
    for model in experiment.models:
        baseline = choose_baseline(experiment, model, baseline_name) if model.kind != "teacher" else None
        epoch = final_epoch(model)
        rows.append([model.name, model.kind, md.count(model.parameters), len(model.runs), md.plain(epoch),
                     md.count(per_seed_mean(model, lambda run: run.value_at(epoch, "tokens_seen"))),
                     _at_epoch(model, epoch, "train_ppl"), _at_epoch(model, epoch, "val_ppl"),
                     _relative(model, baseline, epoch, "train_ppl"), _relative(model, baseline, epoch, "val_ppl")])
    headers = ["model", "kind", "params", "seeds", "epochs", "tokens seen", "final train ppl", "final val ppl",
               "train vs baseline", "val vs baseline"]
    return ("## Final perplexity\n\nThe paper's Tables 1 and 2, at the latest epoch all of a model's seeds have "
            "finished. Perplexities: mean ± sample standard deviation over seeds. \"vs baseline\" is paired by "
            "seed at the same epoch: the geometric mean over seeds of perplexity / the baseline's (below 1 is "
            "better than the baseline), with its 95% t-interval in brackets when there are several seeds.\n\n"
            + md.table(headers, rows))


def _figures_section(names: list[str]) -> str:
    if not names:
        return "## Figures\n\nNo evaluations yet: no figures."
    return ("## Figures\n\nCurves are means over seeds; perplexity bands are mean ± one sample standard "
            "deviation, the reduction's band its 95% t-interval (no band with one seed).\n\n"
            + "\n\n".join(f"![{name}](figures/{name})" for name in names))


def _schedule_section(experiment: Experiment) -> str:
    """Every "schedule" event: when (step, tokens) and why a run's teacher weight changed phase."""
    rows = []
    for model in experiment.students:
        for run in model.runs:
            for event in run.schedule:
                rows.append([model.name, md.plain(run.seed), md.plain(event.get("step")),
                             md.count(number(event.get("tokens_seen"))), md.plain(event.get("phase")),
                             md.weight(number(event.get("w_teacher"))), md.weight(number(event.get("w_data"))),
                             md.plain(event.get("reason"))])
    if not rows:
        return ("## Teacher-weight schedule\n\nNo run logged a schedule change (no superstilled run, or runs from "
                "before schedules were logged).")
    headers = ["model", "seed", "step", "tokens seen", "phase", "w_teacher", "w_data", "why"]
    return ("## Teacher-weight schedule\n\nWhen and why each superstilled run's teacher weight changed phase "
            "(metrics.jsonl \"schedule\" events; the first is the phase it started in).\n\n" + md.table(headers, rows))


def _cost_rows(comparisons: list[Comparison]) -> list[CostRow]:
    """Held-out comparisons only: the last evaluation and the latest epoch where the paper's reading holds."""
    return [CostRow(c.student, c.baseline, c.points[-1], c.epochs_held[-1] if c.epochs_held else None)
            for c in comparisons if c.metric == "val_ppl"]


def _notes_section(notes: list[str]) -> str:
    return "## Notes\n\n" + ("\n".join(f"- {note}" for note in notes) if notes else "Nothing missing.")


def comparisons_of(experiment: Experiment, baseline_name: str | None, notes: list[str]) -> list[Comparison]:
    """Every superstilled model against its baseline, both metrics (notes: what could not be compared)."""
    students = [model for model in experiment.students if model.kind == "student"]
    return compare_all(students, lambda model: choose_baseline(experiment, model, baseline_name), notes)


def paired_models(experiment: Experiment, baseline_name: str | None) -> list[tuple[ModelRuns, ModelRuns]]:
    """(superstilled model, its baseline) for every superstilled model that has one."""
    pairs = []
    for model in experiment.students:
        baseline = choose_baseline(experiment, model, baseline_name) if model.kind == "student" else None
        if baseline is not None and baseline is not model:
            pairs.append((model, baseline))
    return pairs


def render_report(experiment: Experiment, figure_names: list[str], baseline_name: str | None = None) -> str:
    """The whole report.md text."""
    notes = list(experiment.notes)
    comparisons = comparisons_of(experiment, baseline_name, notes)
    any_students = any(model.kind == "student" for model in experiment.students)
    sections = [_header(experiment), _runs_section(experiment), _final_section(experiment, baseline_name),
                _figures_section(figure_names), seeds_section(paired_models(experiment, baseline_name)),
                reduction_section(comparisons, any_students), _schedule_section(experiment),
                cost_section(experiment, _cost_rows(comparisons)), _notes_section(notes)]
    return "\n\n".join(sections) + "\n"


def build_report(location: str, baseline_name: str | None = None) -> ReportFiles:
    """Write RUN/figures/*.png and RUN/report.md; UserError if RUN is missing, empty, or --baseline unknown."""
    experiment = load_experiment(location)
    if baseline_name is not None and experiment.students:
        choose_baseline(experiment, experiment.students[0], baseline_name)  # an unknown name fails before drawing
    figures_dir = experiment.directory / "figures"
    with atomic_output(figures_dir, force=True, option="RUN/figures", kinds=(FIGURES,)) as temp:
        # The comparisons are recomputed by render_report (cheap arithmetic); their notes are its to keep.
        names = write_figures(experiment.models, comparisons_of(experiment, baseline_name, []), Path(temp),
                              experiment.name)
        index = {"kind": "superstill.figures", "figures": names}
        (Path(temp) / FIGURES_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        text = render_report(experiment, names, baseline_name)  # inside: a failure keeps the old figures
    report = experiment.directory / "report.md"
    atomic_write_text(report, text)
    return ReportFiles(report, [figures_dir / name for name in names])
