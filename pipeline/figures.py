"""The report's PNG figures: perplexity of every model against epochs, tokens seen and wall-clock time, and
the sample-complexity reduction against tokens seen.

Like the paper's Figures 2 and 3: one panel for the train subset, one for held-out text, log-scale
perplexity. With several seeds a curve is the mean over seeds at each evaluation (seeds are matched by
tokens seen; wall-clock is the seeds' mean there) and its band is mean ± one sample standard deviation;
the reduction's band is its 95% t-interval over seeds (pipeline/seed_statistics.py). One seed: no band.
Markers are filled where the teacher term was active and hollow otherwise, so a superstilled run's
transition to plain training is visible; on the reduction figure hollow triangles are bounds (▲ the
baseline never got there: at least this much; ▼ it was there by its first evaluation: at most this much).
Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global state), so it is
safe inside tests and servers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.report_runs import ModelRuns, teacher_on
from pipeline.sample_complexity import BEFORE_FIRST, MIXED, NEVER_REACHED
from pipeline.seed_statistics import estimate

if TYPE_CHECKING:
    from pipeline.report_reduction import Comparison


@dataclass(frozen=True)
class Axis:
    """One x axis the perplexity curves are drawn against."""

    key: str
    """The metrics.jsonl field used as x."""
    label: str
    """Axis label."""
    filename: str
    """PNG written under RUN/figures/."""


AXES = (
    Axis("epoch", "epoch", "perplexity_by_epoch.png"),
    Axis("tokens_seen", "training tokens seen", "perplexity_by_tokens.png"),
    Axis("wall_time_s", "training wall-clock time (s)", "perplexity_by_time.png"),
)
REDUCTION_FIGURE = "reduction_by_tokens.png"
PANELS = (("train_ppl", "train subset"), ("val_ppl", "held-out"))
COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive")
BASELINE_SHADES = ("black", "0.4", "0.65", "0.25", "0.8")
"""Baselines in greys, one per student architecture."""
BOUND_MARKERS = {NEVER_REACHED: "^", BEFORE_FIRST: "v", MIXED: "x"}


@dataclass(frozen=True)
class MeanCurve:
    """A model's curve over seeds: per evaluation, x, the mean y, its band (NaN with one seed), teacher on."""

    xs: list[float]
    ys: list[float]
    lows: list[float]
    highs: list[float]
    on: list[bool]


def _band(values: list[float]) -> tuple[float, float, float]:
    """(mean, mean − std, mean + std) over seeds; NaN band with one seed. Perplexity is >= 1: clipped there."""
    e = estimate(values)
    if e.std is None:
        return e.mean, math.nan, math.nan
    return e.mean, max(e.mean - e.std, 1.0), e.mean + e.std


def mean_curve(model: ModelRuns, x_key: str, y_key: str) -> MeanCurve:
    """Per epoch (x_key "epoch") or per evaluation (matched by tokens), the mean over seeds."""
    if x_key == "epoch":
        ended = {e["epoch"]: e for run in reversed(model.runs) for e in run.epochs}  # lowest seed's event wins
        rows = [(float(epoch), values, teacher_on(ended[epoch])) for epoch, values in model.by_epoch(y_key).items()]
    else:
        walls = dict(model.by_tokens("wall_time_s"))
        rows = []
        for tokens, values in model.by_tokens(y_key):
            x = tokens if x_key == "tokens_seen" else (estimate(list(walls[tokens].values())).mean
                                                         if walls.get(tokens) else None)
            if x is not None:
                rows.append((x, values, teacher_on(model.event_at(tokens) or {})))
    bands = [_band(list(values.values())) for _, values, _ in rows]
    return MeanCurve([r[0] for r in rows], [b[0] for b in bands], [b[1] for b in bands], [b[2] for b in bands],
                     [r[2] for r in rows])


def _style(model: ModelRuns, colors: dict[str, str]) -> dict:
    """Teacher grey dashed, baselines black, superstilled students in colour."""
    if model.kind == "teacher":
        return dict(color="0.5", linestyle="--", marker="s")
    if model.kind == "baseline":  # one shade of grey per architecture's baseline
        return dict(color=colors.get(model.name, "black"), linestyle="-", marker="o")
    return dict(color=colors.get(model.name, COLORS[0]), linestyle="-", marker="^")


def _label(model: ModelRuns) -> str:
    kind = model.kind if model.architecture == "gpt" else f"{model.kind}, {model.architecture}"
    name = model.name if model.name == model.kind and model.architecture == "gpt" else f"{model.name} ({kind})"
    return name + (f", {len(model.runs)} seeds" if len(model.runs) > 1 else "")


def _draw_model(ax, model: ModelRuns, x_key: str, y_key: str, style: dict) -> bool:
    """One model's mean curve and band on one panel; False when it has no points for these axes."""
    c = mean_curve(model, x_key, y_key)
    if not c.xs:
        return False
    ax.plot(c.xs, c.ys, color=style["color"], linestyle=style["linestyle"], marker=style["marker"],
            markerfacecolor="white", label=_label(model))
    if len(model.runs) > 1:
        ax.fill_between(c.xs, c.lows, c.highs, color=style["color"], alpha=0.2, linewidth=0)
    active = [(x, y) for x, y, on in zip(c.xs, c.ys, c.on) if on]
    if active:  # filled markers over the hollow ones where the teacher term was on
        ax.plot([p[0] for p in active], [p[1] for p in active], color=style["color"], linestyle="none",
                marker=style["marker"])
    return True


def _finish(figure: Figure, path: Path, title: str) -> None:
    figure.suptitle(title)
    # Fixed margins: tight_layout would measure every tick label first, doubling the drawing time.
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.86, wspace=0.22)
    figure.savefig(path, format="png")


def _panel_axes(ax, x_label: str, title: str, integer_x: bool) -> None:
    ax.set_xlabel(x_label)
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def plot_perplexity(models: list[ModelRuns], colors: dict[str, str], axis: Axis, path: Path, title: str) -> bool:
    """Write one two-panel figure; False (nothing written) when no model has a point on this axis."""
    figure = Figure(figsize=(11, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    drawn = False
    for panel, (y_key, panel_title) in enumerate(PANELS):
        ax = figure.add_subplot(1, len(PANELS), panel + 1)
        for model in models:
            drawn |= _draw_model(ax, model, axis.key, y_key, _style(model, colors))
        ax.set_yscale("log")
        ax.set_ylabel("perplexity (log scale)")
        _panel_axes(ax, axis.label, f"{panel_title} perplexity", axis.key == "epoch")
    if not drawn:
        return False
    _finish(figure, path, f"{title}: mean over seeds, band ± 1 sd; filled markers = teacher term active")
    return True


def _draw_reduction(ax, c: "Comparison", color: str) -> None:
    """One comparison's mean reduction (%) against tokens, its 95% band, bounds as hollow triangles."""
    xs = [p.tokens for p in c.points]
    ax.plot(xs, [100 * p.reduction.mean for p in c.points], color=color, marker="o",
            label=f"{c.student.name} vs {c.baseline.name}, {len(c.readings)} seed(s)")
    lows = [math.nan if p.reduction.low is None else 100 * p.reduction.low for p in c.points]
    highs = [math.nan if p.reduction.high is None else 100 * p.reduction.high for p in c.points]
    ax.fill_between(xs, lows, highs, color=color, alpha=0.2, linewidth=0)
    for kind, marker in BOUND_MARKERS.items():
        bounds = [(p.tokens, 100 * p.reduction.mean) for p in c.points if p.kind == kind]
        if bounds:
            ax.plot([b[0] for b in bounds], [b[1] for b in bounds], color=color, linestyle="none", marker=marker,
                    markersize=10, markerfacecolor="white")


def plot_reductions(comparisons: list["Comparison"], colors: dict[str, str], path: Path, title: str) -> bool:
    """Reduction against tokens seen, train subset and held-out panels; False (nothing written) without any."""
    if not comparisons:
        return False
    figure = Figure(figsize=(11, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    for panel, (metric, panel_title) in enumerate(PANELS):
        ax = figure.add_subplot(1, len(PANELS), panel + 1)
        ax.axhline(0.0, color="0.5", linewidth=0.8)
        for c in comparisons:
            if c.metric == metric:
                _draw_reduction(ax, c, colors.get(c.student.name, COLORS[0]))
        ax.set_ylabel("reduction 1 − n_s / n_b (%)")
        _panel_axes(ax, "training tokens seen", f"{panel_title}: tokens saved to reach the same perplexity", False)
    _finish(figure, path, f"{title}: mean over seeds, band = 95% t-interval; ▲▼ hollow = bounds")
    return True


def write_figures(models: list[ModelRuns], comparisons: list["Comparison"], directory: Path, title: str) -> list[str]:
    """Every figure that has data, written into `directory`; returns the file names written."""
    directory.mkdir(parents=True, exist_ok=True)
    superstilled = [model for model in models if model.kind not in ("teacher", "baseline")]
    colors = {model.name: COLORS[i % len(COLORS)] for i, model in enumerate(superstilled)}
    baselines = [model for model in models if model.kind == "baseline"]
    colors.update({model.name: BASELINE_SHADES[i % len(BASELINE_SHADES)] for i, model in enumerate(baselines)})
    names = [axis.filename for axis in AXES if plot_perplexity(models, colors, axis, directory / axis.filename, title)]
    if plot_reductions(comparisons, colors, directory / REDUCTION_FIGURE, title):
        names.append(REDUCTION_FIGURE)
    return names
