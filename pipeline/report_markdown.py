"""How the report writes numbers and tables in Markdown; one place, so every section reads alike.

Every formatter takes None (a value the run has not produced yet) and writes "n/a".
"""

from __future__ import annotations

from typing import Any, Sequence

NA = "n/a"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; `|` inside cells is escaped."""
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"
    return "\n".join([line(headers), line(["---"] * len(headers))] + [line(row) for row in rows])


def ppl(value: float | None) -> str:
    return NA if value is None else f"{value:.2f}"


def decimal(value: float | None) -> str:
    return NA if value is None else f"{value:.1f}"


def count(value: float | None) -> str:
    """Tokens, positions, parameters: a rounded integer with thousands separators."""
    return NA if value is None else f"{round(value):,}"


def percent(fraction: float | None) -> str:
    return NA if fraction is None else f"{100 * fraction:.1f}%"


def ratio(value: float | None) -> str:
    return NA if value is None else f"{value:.3f}×"


def weight(value: float | None) -> str:
    """A loss weight: three significant digits (0.475, not 0.47500000000000003)."""
    return NA if value is None else f"{value:.3g}"


def flops(value: float | None) -> str:
    return NA if value is None else f"{value:.3g}"


def seconds(value: float | None) -> str:
    return NA if value is None else f"{value:,.1f} s"


def size(num_bytes: float | None) -> str:
    """Bytes in MiB (the store sizes this pipeline produces are MiB to GiB)."""
    return NA if num_bytes is None else f"{num_bytes / 2 ** 20:,.1f} MiB"


def plain(value: Any) -> str:
    """Anything else (a config value): as written, n/a when absent."""
    return NA if value is None else str(value)


def signed_percent(fraction: float | None) -> str:
    """A change: "+7.5%" or "-6.3%"."""
    return NA if fraction is None else f"{100 * fraction:+.1f}%"


def spread(mean: float | None, std: float | None, number=ppl) -> str:
    """"mean ± std" over seeds; the mean alone with one seed (no spread)."""
    if mean is None:
        return NA
    return number(mean) if std is None else f"{number(mean)} ± {number(std)}"


NO_INTERVAL = "1 seed: no interval"


def interval(low: float | None, high: float | None, number=percent) -> str:
    """"[low, high]", or the reason there is none (one seed)."""
    return f"[{number(low)}, {number(high)}]" if low is not None and high is not None else f"({NO_INTERVAL})"


def seeds(values: Sequence[Any]) -> str:
    """A list of seeds: "0, 1, 2" ("n/a" for a run that does not record its seed)."""
    return ", ".join(plain(value) for value in values)


def per_seed(cells: dict[Any, str]) -> str:
    """Values by seed: "0: a, 1: b"; the value alone for a single run."""
    if len(cells) == 1:
        return next(iter(cells.values()))
    return ", ".join(f"{plain(seed)}: {cell}" for seed, cell in cells.items())
