"""`pipeline inspect PATH`: print a summary of any superstill store or run, and what is wrong with it.

A run directory (or a checkpoint file) shows its kind, model family and architecture, parameter count and
where training stands, read from run.json and the checkpoint (loaded with weights_only=True).

The store's kind is read from its Zarr group attributes (`superstill.format`) and dispatched to that
format's summary; a new format (e.g. the logit store) adds one entry to `SUMMARIES`. Every summary ends
with an integrity line: objects that should exist but do not (one listing per array) and, for stores of
at most CHECK_BYTES, the CRC32C of every chunk. A problem is listed under the summary and makes the
command fail with a one-line error naming the first one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
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


def _run_summary(path: Path) -> Inspection:
    from pipeline.checkpoint import load, resolve_path
    from pipeline.config import architecture_label
    from pipeline.run_dir import CHECKPOINT_FILE

    directory = path if path.is_dir() else path.parent
    info = _json_object(directory / "run.json")
    lines = [f"{path}: superstill run ({info.get('kind', 'checkpoint')})"]
    problems = []
    payload = load(path, "PATH") if _has_checkpoint(path, CHECKPOINT_FILE) else None
    spec = (payload or {}).get("model_config") or info.get("model") or {}
    lines.append(f"  architecture  {architecture_label(spec)} (family {spec.get('family', 'gpt')})")
    lines.append(f"  model         {json.dumps(spec, sort_keys=True)}")
    parameters = info.get("parameters") or (_unique_parameters(payload["model"]) if payload else None)
    lines.append(f"  parameters    {parameters:,}" if isinstance(parameters, int) else "  parameters    unknown")
    if payload is None:
        problems.append(f"no {CHECKPOINT_FILE} (training has not saved yet, or it was moved)")
    else:
        position = payload.get("position") or {}
        lines.append(f"  checkpoint    {resolve_path(path, 'PATH')}: epoch {position.get('epoch')}, step "
                     f"{position.get('step')}, {position.get('tokens_seen', 0):,} tokens seen")
        identity = payload.get("identity") or {}
        lines.append(f"  trained on    tokens {str(identity.get('tokens'))[:16]}, teacher {identity.get('teacher') or 'none'}")
    return Inspection("\n".join(lines + [f"  PROBLEM       {p}" for p in problems]), problems,
                      "resume the run or pass its directory once it has saved a checkpoint")


def _has_checkpoint(path: Path, checkpoint_file: str) -> bool:
    return path.is_file() or (path / checkpoint_file).is_file()


def _json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"PATH {path} is not valid JSON ({error}); the run directory is damaged") from None
    return data if isinstance(data, dict) else {}


def _unique_parameters(state: dict) -> int:
    """Elements of a state dict's tensors, a tensor shared by two names (a tied head) counted once."""
    seen = {}
    for tensor in state.values():
        seen.setdefault((tensor.untyped_storage().data_ptr(), tensor.storage_offset()), tensor.numel())
    return sum(seen.values())


def is_run(path: str) -> bool:
    """A run directory (run.json or checkpoint.pt) or a checkpoint file, on local disk."""
    from pipeline.run_dir import CHECKPOINT_FILE

    local = Path(path)
    return (local.is_dir() and any((local / name).is_file() for name in ("run.json", CHECKPOINT_FILE))) or \
        (local.is_file() and local.suffix == ".pt")


def summarize(path: str) -> Inspection:
    if is_run(path):
        return _run_summary(Path(path))
    kind = store_format(path)
    if kind not in SUMMARIES:
        raise UserError(f"PATH {path} has format {kind!r}, which this version cannot inspect "
                        f"(known: {', '.join(SUMMARIES)}); upgrade superstill")
    return SUMMARIES[kind](path)


@click.command("inspect")
@click.argument("path")
def command(path: str) -> None:
    """Print what a store holds (format, fingerprint, sizes, provenance) and check its files are intact; or, for a
    run directory or checkpoint, its model family, architecture, parameters and where training stands."""
    found = summarize(path)
    click.echo(found.text)
    if found.problems:
        more = f" (and {len(found.problems) - 1} more, listed above)" if len(found.problems) > 1 else ""
        raise UserError(f"PATH {path}: {found.problems[0]}{more}; {found.fix}")
