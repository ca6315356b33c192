"""Where artifacts live: local directories or fsspec URLs, and how to write them safely.

Local outputs are built under a hidden temporary sibling and renamed into place only when complete,
so an interrupted job never leaves something that looks finished. Remote (fsspec) outputs cannot be
renamed atomically; there the format's own `complete` flag, written last, is what readers trust.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

import fsspec

from pipeline.errors import UserError


def is_url(location: str | os.PathLike) -> bool:
    """True for fsspec URLs such as memory://x or s3://bucket/x (file:// counts as a URL too)."""
    return "://" in str(location)


def local_path(location: str | os.PathLike) -> Path | None:
    """The filesystem path for a plain path or a file:// URL, else None (a remote URL)."""
    text = str(location)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    return None if is_url(text) else Path(text)


def exists(location: str | os.PathLike) -> bool:
    path = local_path(location)
    if path is not None:
        return path.exists()
    fs, root = fsspec.core.url_to_fs(str(location))
    return fs.exists(root)


def remove(location: str | os.PathLike) -> None:
    path = local_path(location)
    if path is not None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        return
    fs, root = fsspec.core.url_to_fs(str(location))
    if fs.exists(root):
        fs.rm(root, recursive=True)


def check_writable(location: str | os.PathLike, force: bool, option: str = "--out") -> None:
    """Refuse to overwrite an existing output unless --force was given."""
    if exists(location) and not force:
        raise UserError(f"{option} {location} already exists; choose another path or pass --force to overwrite it")


@contextlib.contextmanager
def atomic_output(location: str | os.PathLike, force: bool, option: str = "--out") -> Iterator[str]:
    """Yield a location to build an output in; it appears at `location` only if the block succeeds.

    Local paths: build in `.<name>.partial-<id>` beside the target, then rename (the old output, if
    --force, is removed just before). URLs: build in place; the caller's format marks completion.
    """
    check_writable(location, force, option)
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
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
