"""Where artifacts live: local directories or fsspec URLs, and how to write them safely.

Local outputs are built under a hidden temporary sibling and renamed into place only when complete,
so an interrupted job never leaves something that looks finished. Remote (fsspec) outputs cannot be
renamed atomically; there the format's own `complete` flag, written last, is what readers trust.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Iterator

import fsspec

from pipeline.errors import UserError
from pipeline.object_storage import access_denied, check_bucket


def is_url(location: str | os.PathLike) -> bool:
    """True for fsspec URLs such as memory://x or s3://bucket/x (file:// counts as a URL too)."""
    return "://" in str(location)


def local_path(location: str | os.PathLike) -> Path | None:
    """The filesystem path for a plain path or a file:// URL, else None (a remote URL)."""
    text = str(location)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    return None if is_url(text) else Path(text)


def filesystem(location: str | os.PathLike) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fsspec filesystem, path within it); an unknown scheme or a missing fsspec extra is a one-line error."""
    try:
        return fsspec.core.url_to_fs(str(location))
    except ImportError as error:
        raise UserError(f"{location}: this kind of URL needs a package that is not installed ({error}); install "
                        f"it (for s3://, superstill's `s3` extra: pip install -e '.[s3]')") from None
    except ValueError as error:
        raise UserError(f"{location}: {error}; use a local path or a URL fsspec knows (file://, memory://, "
                        f"s3://, gs://, ...)") from None


def exists(location: str | os.PathLike) -> bool:
    path = local_path(location)
    if path is not None:
        return path.exists()
    fs, root = filesystem(location)
    try:
        return fs.exists(root)
    except PermissionError as error:  # object storage refusing the credentials: the first request says so
        raise access_denied(str(location), error) from None


def remove(location: str | os.PathLike) -> None:
    path = local_path(location)
    if path is not None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        return
    fs, root = filesystem(location)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def check_writable(location: str | os.PathLike, force: bool, option: str = "--out",
                   kinds: tuple[str, ...] = ()) -> None:
    """Fail before any work when `location` cannot be written, or holds something --force may not replace.

    Without --force an existing output is refused. With it, only what this tool made (one of `kinds`,
    see `artifact_kind`) is replaced, never the current directory or one above it.
    """
    path = local_path(location)
    if path is not None:
        check_creatable(path, option)
    else:
        check_bucket(str(location), *filesystem(location), option)
    if not exists(location) or (path is not None and path.is_dir() and not any(path.iterdir())):
        return
    if not force:
        raise UserError(f"{option} {location} already exists; choose another path or pass --force to overwrite it")
    check_replaceable(location, kinds, option)


def check_creatable(path: Path, option: str = "--out") -> None:
    """The nearest existing ancestor must be a writable directory (a read-only or missing place fails now)."""
    parent = path if path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{option} {path}: {parent} is a file, not a directory; choose another location")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: {parent} is not writable; choose a writable location or fix permissions")


ARTIFACT_KINDS = {"superstill.tokens": "token store", "superstill.logits": "logit store"}
RUN, EXPERIMENT, TOKENS, LOGITS, FIGURES = "run", "experiment", "token store", "logit store", "figures"
FIGURES_INDEX = "index.json"
"""Written by `pipeline report` into RUN/figures/: {"kind": "superstill.figures", "figures": [...]}."""


def artifact_kind(location: str | os.PathLike) -> str | None:
    """What superstill artifact is at `location` ("run", "experiment", "token store", "logit store"), or None.

    Recognised by files only this tool writes: a run's run.json (with its "kind"), an experiment's
    experiment.json + state.json, a store's zarr.json with the `superstill.format` attribute, a report's
    figures/index.json.
    """
    fs, root = filesystem(location)
    root = root.rstrip("/")
    try:
        if fs.isfile(f"{root}/zarr.json"):
            meta = json.loads(fs.cat_file(f"{root}/zarr.json")).get("attributes", {}).get("superstill", {})
            return ARTIFACT_KINDS.get(meta.get("format")) if isinstance(meta, dict) else None
        if fs.isfile(f"{root}/run.json"):
            record = json.loads(fs.cat_file(f"{root}/run.json"))
            return RUN if isinstance(record, dict) and "kind" in record and "tool_version" in record else None
        if fs.isfile(f"{root}/experiment.json") and fs.isfile(f"{root}/state.json"):
            return EXPERIMENT
        if fs.isfile(f"{root}/{FIGURES_INDEX}"):
            index = json.loads(fs.cat_file(f"{root}/{FIGURES_INDEX}"))
            return FIGURES if isinstance(index, dict) and index.get("kind") == "superstill.figures" else None
        if root.endswith("/figures") and all(name.endswith(".png") for name in fs.ls(root, detail=False)):
            return FIGURES  # written by a report from before figures/index.json: nothing but its PNGs
    except (OSError, ValueError, AttributeError):
        return None
    return None


def check_replaceable(location: str | os.PathLike, kinds: tuple[str, ...], option: str = "--out") -> None:
    """Refuse to delete `location` unless it is a superstill artifact of one of `kinds` (and not the cwd)."""
    path = local_path(location)
    if path is not None and Path.cwd().resolve().is_relative_to(path.resolve()):
        raise UserError(f"{option} {location} is the current directory or contains it; --force never deletes "
                        f"that: choose a new directory for --out")
    kind = artifact_kind(location)
    if kind is None:
        raise UserError(f"{option} {location} exists and was not made by superstill; --force only replaces "
                        f"superstill's own outputs: choose another path or move it away yourself")
    if kinds and kind not in kinds:
        raise UserError(f"{option} {location} holds a {kind}, not a {' or '.join(kinds)}; --force will not "
                        f"replace it with another kind of output: choose another path")


def check_apart(out: str | os.PathLike | None, inputs, option: str = "--out") -> None:
    """Refuse an output that is, contains or lies inside one of the command's inputs: {option: location}
    or (option, location) pairs (an option such as CORPUS may name several)."""
    if out is None:
        return
    for input_option, location in (inputs.items() if isinstance(inputs, dict) else inputs):
        if location is None or str(location) == "":
            continue
        relation = _relation(out, location)
        if relation:
            raise UserError(f"{option} {out} {relation} {input_option} {location}; an output must be apart "
                            f"from the command's inputs: choose another {option}")


def _relation(out: str | os.PathLike, other: str | os.PathLike) -> str | None:
    """"is", "contains", "lies inside" (out relative to other), or None when apart."""
    a, b = _comparable(out), _comparable(other)
    if a is None or b is None or a[0] != b[0]:
        return None
    if a[1] == b[1]:
        return "is"
    if b[1].is_relative_to(a[1]):
        return "contains"
    if a[1].is_relative_to(b[1]):
        return "lies inside"
    return None


def _comparable(location: str | os.PathLike) -> tuple[str, PurePosixPath | Path] | None:
    """(scheme, normalised path) of a location, local paths resolved through symlinks."""
    path = local_path(location)
    if path is not None:
        return "file", path.expanduser().resolve()
    try:
        fs, root = filesystem(location)
    except UserError:
        return None
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol, PurePosixPath("/" + root.strip("/"))


@contextlib.contextmanager
def atomic_output(location: str | os.PathLike, force: bool, option: str = "--out",
                  kinds: tuple[str, ...] = ()) -> Iterator[str]:
    """Yield a location to build an output in; it appears at `location` only if the block succeeds.

    Local paths: build in `.<name>.partial-<id>` beside the target, then rename (the old output, if
    --force, is removed just before). URLs: build in place; the caller's format marks completion.
    """
    check_writable(location, force, option, kinds)
    path = local_path(location)
    if path is None:
        if force:
            remove(location)
        yield str(location)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        yield str(temp)
    except BaseException:
        remove(temp)
        raise
    if path.exists():
        remove(path)
    os.replace(temp, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a small local file via temp-and-rename so a crash leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:  # disk full, interrupted: leave the old file, and no partial one beside it
        temp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
