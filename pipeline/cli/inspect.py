"""`pipeline inspect PATH`: print a summary of any superstill store, and what is wrong with it.

The store's kind is read from its Zarr group attributes (`superstill.format`) and dispatched to that
format's summary; a new format (e.g. the logit store) adds one entry to `SUMMARIES`. Every summary ends
with an integrity line: objects that should exist but do not (one listing per array) and, for stores of
at most CHECK_BYTES, the CRC32C of every chunk. A problem is listed under the summary and makes the
command fail with a one-line error naming the first one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import click

from pipeline.errors import UserError

CHECK_BYTES = 1 << 30  # read every chunk's bytes up to this size; larger stores: `pipeline validate`


@dataclass
class Inspection:
    text: str
    """The store's summary, ending with its integrity line and one line per problem."""
    problems: list[str]
    """What is wrong with the store's files (empty: nothing found)."""
    fix: str
    """What to do about them."""


def _token_store_summary(path: str) -> Inspection:
    from pipeline.token_store import DAMAGED_FIX, TokenStore

    store = TokenStore.open(path, option="PATH", check_files=False)
    status, problems = store.integrity(CHECK_BYTES)
    return Inspection(_with_integrity(store.summary(sample=not problems), status, problems), problems, DAMAGED_FIX)


def _logit_store_summary(path: str) -> Inspection:
    from pipeline.logit_store import DAMAGED_FIX, LogitStore
    from pipeline.store_card import card_text

    store = LogitStore.open(path, require_complete=False, option="PATH", check_files=False)
    status, problems = store.integrity(CHECK_BYTES)
    return Inspection(_with_integrity(store.summary(), status, problems) + card_text(path), problems, DAMAGED_FIX)


def _with_integrity(summary: str, status: str, problems: list[str]) -> str:
    return "\n".join([summary, f"  integrity     {status}"] + [f"  PROBLEM       {p}" for p in problems])


SUMMARIES: dict[str, Callable[[str], Inspection]] = {
    "superstill.tokens": _token_store_summary,
    "superstill.logits": _logit_store_summary,
}


def store_format(path: str) -> str:
    """The `superstill.format` attribute of the Zarr group at `path`."""
    from pipeline.storage import exists
    from pipeline.store_checks import open_group

    hint = "give a directory written by a pipeline stage"
    if not exists(path):
        raise UserError(f"PATH {path}: no such store; {hint}")
    _, attrs = open_group(path, "r", "PATH", "superstill store", hint)
    meta = attrs.get("superstill")
    if not isinstance(meta, dict) or "format" not in meta:
        raise UserError(f"PATH {path} is a Zarr group but not a superstill store (no superstill.format attribute)")
    return str(meta["format"])


def summarize(path: str) -> Inspection:
    kind = store_format(path)
    if kind not in SUMMARIES:
        raise UserError(f"PATH {path} has format {kind!r}, which this version cannot inspect "
                        f"(known: {', '.join(SUMMARIES)}); upgrade superstill")
    return SUMMARIES[kind](path)


@click.command("inspect")
@click.argument("path")
def command(path: str) -> None:
    """Print what a store holds (format, fingerprint, sizes, provenance) and check its files are intact."""
    found = summarize(path)
    click.echo(found.text)
    if found.problems:
        more = f" (and {len(found.problems) - 1} more, listed above)" if len(found.problems) > 1 else ""
        raise UserError(f"PATH {path}: {found.problems[0]}{more}; {found.fix}")
