"""Integrity checks shared by the token store and the logit store (docs/STORE.md section 6).

zarr trusts what it finds: a chunk or shard object that is missing reads as the array's fill value
(zeros, silently), damaged bytes raise a bare `ValueError("Stored and computed checksum do not
match ...")` from the crc32c codec, and a damaged zarr.json a `JSONDecodeError`, all from deep inside
zarr. The stores call these helpers so that each case becomes one `UserError` line naming the file
and the fix. Locations are local paths or fsspec URLs; objects are named `<location>/<key>`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from typing import Any, Iterable

import google_crc32c
import zarr
from fsspec.implementations.local import LocalFileSystem

from pipeline.errors import UserError
from pipeline.spec_parsing import build_spec, field_names
from pipeline.storage import exists, filesystem, local_path


def zarr_location(location: str) -> str:
    """Plain paths and file:// URLs go to zarr's LocalStore; other URLs to its fsspec store."""
    return str(local_path(location) or location)


def object_path(location: str, key: str) -> str:
    """Path or URL of the object `key` ("train/ids/c/0/0") of the store at `location`."""
    return f"{str(location).rstrip('/')}/{key}"


def read_bytes(path: str) -> bytes:
    fs, root = filesystem(path)
    return fs.cat_file(root)


def crc_ok(data: bytes) -> bool:
    """True if the last 4 bytes are the little-endian CRC32C of the rest (zarr's crc32c codec)."""
    return len(data) >= 4 and google_crc32c.value(bytes(data[:-4])) == int.from_bytes(data[-4:], "little")


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__


# ---- opening: the group's zarr.json and its metadata -----------------------------------------------

def open_group(location: str, mode: str, option: str, kind: str, create_hint: str) -> tuple[zarr.Group, dict]:
    """The Zarr v3 group at `location` and its attributes, or a UserError naming what is wrong."""
    if not exists(location):
        raise UserError(f"{option} {location}: no such {kind}; {create_hint}")
    try:
        group = zarr.open_group(zarr_location(location), mode=mode, zarr_format=3)
        return group, group.attrs.asdict()
    except Exception as error:  # zarr raises several types for "not a group" and for damaged JSON
        damage = _json_damage(object_path(location, "zarr.json"))
        if damage:
            raise UserError(f"{option} {location}: its metadata {damage}; re-download the store or create it "
                            f"again") from None
        raise UserError(f"{option} {location} is not a {kind} ({type(error).__name__}); {create_hint}") from None


def _json_damage(path: str) -> str | None:
    """"<path> is damaged (...)" if the file exists but is not JSON (truncated, overwritten), else None."""
    try:
        json.loads(read_bytes(path))
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return f"{path} is damaged ({first_line(error)})"
    return None


def parse_meta(cls, data: Any, where: str, optional: Iterable[str] = ()):
    """Dataclass `cls` from stored metadata, every field present (but `optional`) and type-checked."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a table of metadata, got {type(data).__name__}")
    names = field_names(cls)
    missing = [name for name in names if name not in data and name not in set(optional)]
    if missing:
        raise UserError(f"{where}: missing key(s) {', '.join(missing)}")
    return build_spec(cls, {name: data[name] for name in names if name in data}, where)


def open_array(group: zarr.Group, key: str, location: str, option: str) -> zarr.Array:
    """The array `key` of `group`; a missing or damaged array zarr.json is a UserError naming it."""
    try:
        array = group[key]
    except Exception as error:  # KeyError when absent, JSONDecodeError/ValueError/TypeError when damaged
        raise UserError(f"{option} {location}: cannot open array {key} ({object_path(location, key + '/zarr.json')}: "
                        f"{first_line(error)}); re-download the store or create it again") from None
    if not isinstance(array, zarr.Array):
        raise UserError(f"{option} {location}: {key} is not an array; re-download the store or create it again")
    return array


# ---- objects that must exist -------------------------------------------------------------------------

def list_objects(location: str, prefix: str) -> dict[str, int]:
    """{key under `prefix`: size in bytes} of every object below `<location>/<prefix>`: one listing."""
    fs, root = filesystem(object_path(location, prefix))
    if isinstance(fs, LocalFileSystem):
        root = os.path.normpath(root)  # find() names what it walks; ".." must not survive in the prefix
    root = root.rstrip("/")
    return {name[len(root) + 1:]: int(info.get("size") or 0)
            for name, info in fs.find(root, detail=True).items() if name.startswith(root + "/")}


def chunk_grid(array: zarr.Array) -> Iterable[tuple[int, ...]]:
    """Coordinates of every storage object (a shard when sharded, else a chunk) of `array`."""
    per_object = array.shards or array.chunks
    return itertools.product(*(range(math.ceil(size / step)) for size, step in zip(array.shape, per_object)))


def missing_objects(location: str, key: str, array: zarr.Array, coords: Iterable[tuple[int, ...]],
                    listed: dict[str, int] | None = None) -> list[str]:
    """Paths of the objects at `coords` of array `key` absent from `listed` (default: a listing of it)."""
    listed = list_objects(location, key) if listed is None else listed
    expected = (array.metadata.encode_chunk_key(c) for c in coords)
    return [object_path(location, f"{key}/{name}") for name in expected if name not in listed]


def damaged_objects(paths: Iterable[str]) -> list[str]:
    """The paths whose bytes fail their trailing CRC32C (for unsharded arrays whose last codec is crc32c)."""
    return [path for path in paths if not crc_ok(read_bytes(path))]
