"""`pipeline inspect PATH`: print a summary of any superstill store.

The store's kind is read from its Zarr group attributes (`superstill.format`) and dispatched to that
format's summary; a new format (e.g. the logit store) adds one entry to `SUMMARIES`.
"""

from __future__ import annotations

from typing import Callable

import click

from pipeline.errors import UserError


def _token_store_summary(path: str) -> str:
    from pipeline.token_store import TokenStore

    return TokenStore.open(path, option="PATH").summary()


def _logit_store_summary(path: str) -> str:
    from pipeline.logit_store import LogitStore

    return LogitStore.open(path, require_complete=False, option="PATH").summary()


SUMMARIES: dict[str, Callable[[str], str]] = {
    "superstill.tokens": _token_store_summary,
    "superstill.logits": _logit_store_summary,
}


def store_format(path: str) -> str:
    """The `superstill.format` attribute of the Zarr group at `path`."""
    import zarr

    from pipeline.storage import exists

    if not exists(path):
        raise UserError(f"PATH {path}: no such store; give a directory written by a pipeline stage")
    try:
        attrs = zarr.open_group(str(path), mode="r", zarr_format=3).attrs.asdict()
    except Exception as error:  # zarr raises several types for "not a group"
        raise UserError(f"PATH {path} is not a superstill store (not a Zarr v3 group: "
                        f"{type(error).__name__}); give a directory written by a pipeline stage") from None
    meta = attrs.get("superstill")
    if not isinstance(meta, dict) or "format" not in meta:
        raise UserError(f"PATH {path} is a Zarr group but not a superstill store (no superstill.format attribute)")
    return str(meta["format"])


def summarize(path: str) -> str:
    kind = store_format(path)
    if kind not in SUMMARIES:
        raise UserError(f"PATH {path} has format {kind!r}, which this version cannot inspect "
                        f"(known: {', '.join(SUMMARIES)}); upgrade superstill")
    return SUMMARIES[kind](path)


@click.command("inspect")
@click.argument("path")
def command(path: str) -> None:
    """Print what a store holds: format, fingerprint, sizes, provenance."""
    click.echo(summarize(path))
