"""The report's PNG figures: perplexity of every model against epochs, tokens seen and wall-clock time.

Like the paper's Figures 2 and 3: one panel for the train subset, one for held-out text, log-scale
perplexity. Markers are filled for epochs in which the teacher term was active and hollow otherwise, so a
superstilled run's transition to plain training is visible. Drawn with matplotlib's object API on the Agg
canvas (no pyplot, no display, no global state), so it is safe inside tests and servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.report_runs import RunResult, number


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
PANELS = (("train_ppl", "train subset"), ("val_ppl", "held-out"))
COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive")


def _style(run: RunResult, index: int) -> dict:
    """Teacher grey dashed, baselines black, superstilled students in colour."""
    if run.kind == "teacher":
        return dict(color="0.5", linestyle="--", marker="s")
    if run.kind == "baseline":
        return dict(color="black", linestyle="-", marker="o")
    return dict(color=COLORS[index % len(COLORS)], linestyle="-", marker="^")


def _draw_run(ax, run: RunResult, x_key: str, y_key: str, style: dict) -> bool:
    """One run's curve on one panel; False when it has no points for these axes."""
    points = [(number(e.get(x_key)), number(e.get(y_key)), bool(e.get("superstill"))) for e in run.epochs]
    points = [(x, y, on) for x, y, on in points if x is not None and y is not None]
    if not points:
        return False
    label = run.name if run.name == run.kind else f"{run.name} ({run.kind})"
    ax.plot([p[0] for p in points], [p[1] for p in points], color=style["color"], linestyle=style["linestyle"],
            marker=style["marker"], markerfacecolor="white", label=label)
    active = [(x, y) for x, y, on in points if on]
    if active:  # filled markers over the hollow ones where the teacher term was on
        ax.plot([p[0] for p in active], [p[1] for p in active], color=style["color"], linestyle="none",
                marker=style["marker"])
    return True


def plot_perplexity(runs: list[RunResult], axis: Axis, path: Path, title: str) -> bool:
    """Write one two-panel figure; False (nothing written) when no run has a point on this axis."""
    figure = Figure(figsize=(11, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    drawn = False
    for panel, (y_key, panel_title) in enumerate(PANELS):
        ax = figure.add_subplot(1, len(PANELS), panel + 1)
        students = 0
        for run in runs:
            drawn |= _draw_run(ax, run, axis.key, y_key, _style(run, students))
            students += run.kind not in ("teacher", "baseline")
        ax.set_yscale("log")
        ax.set_xlabel(axis.label)
        if axis.key == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("perplexity (log scale)")
        ax.set_title(f"{panel_title} perplexity")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    if not drawn:
        return False
    figure.suptitle(f"{title}: filled markers = teacher term active")
    # Fixed margins: tight_layout would measure every tick label first, doubling the drawing time.
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.86, wspace=0.22)
    figure.savefig(path, format="png")
    return True


def write_figures(runs: list[RunResult], directory: Path, title: str) -> list[str]:
    """Every figure that has data, written into `directory`; returns the file names written."""
    directory.mkdir(parents=True, exist_ok=True)
    return [axis.filename for axis in AXES if plot_perplexity(runs, axis, directory / axis.filename, title)]
