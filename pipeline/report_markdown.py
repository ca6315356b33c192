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
