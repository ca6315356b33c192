"""The logit store: a teacher's top-k next-token distribution for every position of a token store.

    STORE/zarr.json        group; attributes["superstill"] = LogitStoreMeta.to_dict()
    STORE/<split>/{ids, score_deltas, log_normalizer, tail_mass}   data, sharded by `shard_rows` rows
    STORE/<split>/shard_complete   [n_shards] uint8, one object per element: 1 = shard written

docs/STORE.md is the full spec (a store is readable with zarr + numpy alone). One process `create`s
a store; any number write disjoint whole shards; `finish` sets `complete` last.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from pipeline import __version__
from pipeline.errors import UserError
from pipeline.storage import check_writable, exists, remove
from pipeline.store_card import write_card
from pipeline.store_checks import (crc_ok, first_line, list_objects, missing_objects, object_path, open_array,
                                   open_group, parse_meta, read_bytes, zarr_location)
from pipeline.sampled_rows import (MAX_SAMPLES, ROW_KINDS, SAMPLED_ARRAYS, SAMPLED_LAYOUT, SampledRows,
                                   describe as describe_sampled, distinct_stats, sampled_dtypes)
from pipeline.teacher_rows import DEFAULT_TEMPERATURES, TeacherRows, check_temperatures
from pipeline.token_store import SPLITS, TokenStore, smallest_uint_dtype

FORMAT_NAME = "superstill.logits"
FORMAT_VERSION = 2
FIRST_VERSION = {"topk": 1, "sampled": 2}  # each row kind is written as the oldest version that reads it
DATA_ARRAYS = ("ids", "score_deltas", "log_normalizer", "tail_mass")  # top-k rows (sampled: SAMPLED_ARRAYS)
CONTENT_FIELDS = ("token_fingerprint", "vocab_size", "k", "temperatures", "positions", "context", "stride", "shard_rows",
                  "chunk_rows", "codec", "teacher", "precision", "rows", "samples", "sample_seed")  # what a resume must match
LAYOUT = ("row p = teacher's distribution of token p+1; ids by descending logit z; scores = z - max z = "
          "cumsum(score_deltas, axis=1, dtype=uint16).view(float16); log softmax(z/T) = scores/T - "
          "log_normalizer[:, j] at temperatures[j]; see docs/STORE.md")
# Lossless compressor presets (crc32c is always appended), measured by benchmarks/bench_store_codec.py.
CODECS: dict[str, Callable[[], list]] = {
    "zstd-3": lambda: [ZstdCodec(level=3)],
    "blosc-lz4-shuffle": lambda: [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")],
    "blosc-zstd3-shuffle": lambda: [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")],
    "blosc-zstd4-shuffle": lambda: [BloscCodec(cname="zstd", clevel=4, shuffle="shuffle")],
    "blosc-zstd5-shuffle": lambda: [BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")],
    "blosc-zstd5-bitshuffle": lambda: [BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")],
    "blosc-zstd9-shuffle": lambda: [BloscCodec(cname="zstd", clevel=9, shuffle="shuffle")],
}
DEFAULT_CODEC = "blosc-zstd4-shuffle"
# How the teacher's logits were computed (docs/STORE.md section 5 says what exactness each implies).
PRECISIONS = {
    "fp32": "float32 throughout",
    "bf16-autocast-fp32-head": "trunk under bf16 autocast; final LayerNorm, head and normalizers in float32",
    "bf16-autocast": "whole forward, head included, under bf16 autocast (a CUDA dump that predates this field)",
    "unknown": "not recorded (a store that predates this field and has no dump stats)",
}
ADDED_FIELDS = ("precision", "provenance", "rows", "samples", "sample_seed")  # fields newer than version 1: stores written before them still read
CREATE_HINT = "create one with `pipeline dump-teacher`"
DAMAGED_FIX = ("the store is damaged: re-download it or dump it again (`pipeline dump-teacher ... --force`); "
               "`pipeline validate` lists every damaged chunk")
META_FIX = "the store's metadata is damaged: re-download the store or dump it again (`pipeline dump-teacher ... --force`)"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


@dataclass
class LogitStoreMeta:
    """Everything recorded about a logit store; round-trips through `to_dict`/`from_dict`."""

    token_fingerprint: str
    """`TokenStore.fingerprint` of the tokens the rows were computed from."""
    vocab_size: int
    """V: ids are in [0, V); c_T and the tail are over all V."""
    k: int
    """Ids stored per position."""
    positions: dict[str, int]
    """Rows per split (= tokens in that split of the token store); its keys are the splits stored."""
    context: int
    """C, the teacher's window length in tokens."""
    stride: int
    """S, the step between windows (S <= C: each position after the first window sees >= C - S tokens)."""
    teacher: dict[str, Any]
    """{"checkpoint_sha256": ..., "model": ModelConfig dict} of the teacher."""
    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES
    """Temperatures at which c_T and the tail were computed exactly."""
    tokens: str = ""
    """Where the token store was (informational; the fingerprint is what is checked)."""
    shard_rows: int = 65536
    """Rows per shard file: the unit of work, resume and transfer."""
    chunk_rows: int = 4096
    """Rows per compressed, checksummed inner chunk: the unit of a training read."""
    codec: str = DEFAULT_CODEC
    """Name of the compressor preset (see CODECS)."""
    codec_json: list[dict[str, Any]] = field(default_factory=list)
    """The preset's zarr codec JSON (filled in by `create`)."""
    dtypes: dict[str, str] = field(default_factory=dict)
    """numpy dtype of each stored array (filled in by `create`)."""
    layout: str = LAYOUT
    """How to decode a row, in one line (docs/STORE.md has the rest)."""
    stats: dict[str, Any] = field(default_factory=dict)
    """Top-k mass per split and T, stored bytes, bytes per position, dump wall time (set by `finish`)."""
    created_at: str = ""
    """UTC time `create` ran (ISO 8601)."""
    format: str = FORMAT_NAME
    """Always "superstill.logits"."""
    version: int = FORMAT_VERSION
    """Format version; readers refuse newer ones."""
    tool_version: str = __version__
    """superstill version that created the store."""
    complete: bool = False
    """False until `finish` has checked every shard; readers refuse incomplete stores."""
    precision: str = "fp32"
    """How the teacher ran (a key of PRECISIONS); older stores get it inferred by `from_dict`."""
    rows: str = "topk"
    """"topk" or "sampled" (version 2): what a row holds (docs/STORE.md section 10 for sampled rows)."""
    samples: int = 0
    """Sampled rows: N, draws per position (0 for top-k rows)."""
    sample_seed: int = 0
    """Sampled rows: the seed of the per-position draws."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """What the store was made from, for its card (pipeline/store_card.py): the teacher's parameters and
    held-out perplexity, the corpus behind the tokens, the parts a dump was split into, the store a slice
    was cut from. Informational: not compared on resume."""

    def __post_init__(self) -> None:
        _check(self.format == FORMAT_NAME, f"not a logit store (format {self.format!r}, expected {FORMAT_NAME!r})")
        _check(self.version <= FORMAT_VERSION, f"logit store format version {self.version} is newer than "
                                               f"this tool ({FORMAT_VERSION}); upgrade superstill")
        self.temperatures = check_temperatures(self.temperatures)
        _check(self.vocab_size >= 1, f"vocab_size must be >= 1, got {self.vocab_size}")
        _check(1 <= self.k <= self.vocab_size or self.rows == "sampled", f"--top-k {self.k} must be between 1 and the vocabulary size {self.vocab_size}")
        _check(self.context >= 1 and 1 <= self.stride <= self.context,
               f"--stride {self.stride} must be between 1 and the context {self.context}")
        _check(self.shard_rows >= 1 and self.chunk_rows >= 1 and self.shard_rows % self.chunk_rows == 0,
               f"--shard-rows {self.shard_rows} must be a positive multiple of --chunk-rows {self.chunk_rows}")
        _check(bool(self.positions), "a logit store needs at least one split")
        for split, count in self.positions.items():
            _check(split in SPLITS, f"--split {split}: expected one of {', '.join(SPLITS)}")
            _check(isinstance(count, int) and not isinstance(count, bool) and count >= 0,
                   f"positions of {split} must be a whole number >= 0, got {count!r}")
        _check(self.precision in PRECISIONS, f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        _check(self.rows in ROW_KINDS, f"rows {self.rows!r} is not one of {', '.join(ROW_KINDS)}")
        _check(self.rows == "topk" or (1 <= self.samples <= MAX_SAMPLES and self.k == self.samples
                                       and len(self.temperatures) == 1),
               f"sampled rows need 1 <= samples <= {MAX_SAMPLES}, k = samples and one temperature, "
               f"got samples {self.samples}, k {self.k}, temperatures {list(self.temperatures)}")

    @property
    def splits(self) -> list[str]:
        return list(self.positions)

    def n_shards(self, split: str) -> int:
        return math.ceil(self.positions[split] / self.shard_rows)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples become lists, as zarr stores them

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "logit store metadata") -> "LogitStoreMeta":
        """From stored metadata: every field present (but ADDED_FIELDS) and of its type, else a UserError
        naming `where`; keys this version does not know are ignored."""
        if isinstance(data, dict) and "precision" not in data:
            data = {**data, "precision": _legacy_precision(data.get("stats"))}
        return parse_meta(cls, data, where, optional=ADDED_FIELDS)

    def differences(self, other: "LogitStoreMeta") -> list[str]:
        """Fields that define the stored content and differ (a resume must match all of them)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{n}: {mine[n]!r} != {theirs[n]!r}" for n in CONTENT_FIELDS if mine[n] != theirs[n]]


def _width(meta: LogitStoreMeta, name: str) -> int:
    """Columns of a data array: k for ids, score deltas and sampled rows' arrays, one per listed temperature for
    the others."""
    return meta.k if name in ("ids", "score_deltas") + SAMPLED_ARRAYS else len(meta.temperatures)


def data_arrays(meta: LogitStoreMeta) -> tuple[str, ...]:
    """The data arrays of each split (besides shard_complete): they depend on the row kind."""
    return SAMPLED_ARRAYS if meta.rows == "sampled" else DATA_ARRAYS


def _legacy_precision(stats: Any) -> str:
    """The precision of a store written before it was recorded: those dumps ran bf16 autocast on CUDA
    (head included) and float32 elsewhere, and recorded the device in their stats."""
    device = stats.get("device") if isinstance(stats, dict) else None
    if not isinstance(device, str):
        return "unknown"
    return "bf16-autocast" if device.startswith("cuda") else "fp32"


class _Store:
    """What the reader and the writer share: the group, its metadata and shard bookkeeping."""

    def __init__(self, location: str, group: zarr.Group, meta: LogitStoreMeta, option: str):
        self.location, self.group, self.meta, self.option = str(location), group, meta, option
        self._arrays: dict[str, zarr.Array] = {}  # opening one rereads its zarr.json: ~1 ms

    @classmethod
    def _open(cls, location: str, mode: str, option: str):
        """An instance on the store at `location`, its metadata and arrays checked (UserError if damaged)."""
        location = str(location)
        group, attrs = open_group(location, mode, option, "logit store", CREATE_HINT)
        stored = attrs.get("superstill")
        if not isinstance(stored, dict) or stored.get("format") != FORMAT_NAME:
            raise UserError(f"{option} {location} is not a logit store (no {FORMAT_NAME} metadata; if a dump was "
                            f"interrupted while creating it, start over with --force)")
        where = f"{option} {object_path(location, 'zarr.json')}: attribute superstill"
        try:
            meta = LogitStoreMeta.from_dict(stored, where)
        except UserError as error:
            message = str(error) if str(error).startswith(where) else f"{where}: {error}"
            raise UserError(f"{message}; {META_FIX}") from None
        store = cls(location, group, meta, option)
        store._check_arrays()
        return store

    def _check_arrays(self) -> None:
        """Open every array (a missing or damaged zarr.json is a UserError) and check its shape and dtype."""
        meta = self.meta
        for split in meta.splits:
            for name in data_arrays(meta) + ("shard_complete",):
                shape = (meta.n_shards(split),) if name == "shard_complete" else (meta.positions[split], _width(meta, name))
                array = open_array(self.group, f"{split}/{name}", self.location, self.option)
                dtype = meta.dtypes.get(name, array.dtype.name)
                if array.shape != shape or array.dtype.name != dtype:
                    raise UserError(f"{self.option} {self.location}: array {split}/{name} is {array.dtype.name}"
                                    f"{list(array.shape)} but its metadata says {dtype}{list(shape)}; {META_FIX}")
                self._arrays[f"{split}/{name}"] = array.with_config({"write_empty_chunks": True})

    def _split(self, split: str) -> str:
        if split not in self.meta.positions:
            raise UserError(f"{self.option} {self.location} has no {split!r} split (it has "
                            f"{', '.join(self.meta.splits)}); dump that split with `pipeline dump-teacher`")
        return split

    def array(self, split: str, name: str) -> zarr.Array:
        key = f"{self._split(split)}/{name}"
        if key not in self._arrays:  # write even all-zero chunks: a written shard always has its file
            self._arrays[key] = self.group[key].with_config({"write_empty_chunks": True})
        return self._arrays[key]

    def positions(self, split: str) -> int:
        return self.meta.positions[self._split(split)]

    def shard_range(self, split: str, shard: int) -> tuple[int, int]:
        """Rows [start, stop) of one shard."""
        if not 0 <= shard < self.meta.n_shards(self._split(split)):
            raise ValueError(f"{split} has {self.meta.n_shards(split)} shards, not shard {shard}")
        start = shard * self.meta.shard_rows
        return start, min(start + self.meta.shard_rows, self.meta.positions[split])

    def completed_shards(self, split: str) -> set[int]:
        markers = self.array(split, "shard_complete")
        return {int(s) for s in np.flatnonzero(markers[:])} if markers.shape[0] else set()

    def shard_file(self, split: str, name: str, shard: int) -> str:
        """Path or URL of the object holding one shard of one array."""
        key = self.array(split, name).metadata.encode_chunk_key((shard, 0))
        return object_path(self.location, f"{split}/{name}/{key}")

    def listings(self) -> dict[str, dict[str, int]]:
        """{"<split>/<array>": {object key: size}} for every array: one listing each."""
        return {key: list_objects(self.location, key) for key in
                (f"{split}/{name}" for split in self.meta.splits for name in data_arrays(self.meta) + ("shard_complete",))}

    def missing_files(self, listed: dict[str, dict[str, int]] | None = None) -> list[str]:
        """Objects that must exist but do not: each data array's file for every written shard (every shard
        once complete) and, in a complete store, every completion marker. One listing per array."""
        listed, missing = listed or self.listings(), []
        for split in self.meta.splits:
            every = range(self.meta.n_shards(split))
            shards = every if self.meta.complete else sorted(self.completed_shards(split))
            for name in data_arrays(self.meta):
                key = f"{split}/{name}"
                missing += missing_objects(self.location, key, self.array(split, name), [(s, 0) for s in shards],
                                           listed[key])
            if self.meta.complete:
                key = f"{split}/shard_complete"
                missing += missing_objects(self.location, key, self.array(split, "shard_complete"),
                                           [(s,) for s in every], listed[key])
        return missing



class LogitStoreWriter(_Store):
    """Creates a store (one process) and writes whole shards (any process, disjoint shards)."""

    @classmethod
    def create(cls, location: str, meta: LogitStoreMeta, force: bool = False, option: str = "--out",
               shared: bool = False) -> "LogitStoreWriter":
        """Write the group metadata and empty arrays; existing `location` needs `force`. `shared` (parts of
        one dump racing to create it, pipeline/dump_parts.py) never deletes anything: zarr raises
        ContainsArrayError if another process created an array first."""
        _check(meta.codec in CODECS, f"--codec {meta.codec!r} is unknown; choose one of {', '.join(CODECS)}")
        if not shared:
            check_writable(location, force, option)
            if exists(location):
                remove(location)
        compressors = CODECS[meta.codec]() + [Crc32cCodec()]
        dtypes = ({**sampled_dtypes(meta.vocab_size), "shard_complete": "uint8"} if meta.rows == "sampled"
                  else {"ids": smallest_uint_dtype(meta.vocab_size).name, "score_deltas": "uint16",
                        "log_normalizer": "float32", "tail_mass": "float32", "shard_complete": "uint8"})
        meta = dataclasses.replace(meta, complete=False, stats={}, dtypes=dtypes, version=FIRST_VERSION[meta.rows],
                                   layout=SAMPLED_LAYOUT if meta.rows == "sampled" else LAYOUT,
                                   codec_json=[c.to_dict() for c in compressors], tool_version=__version__,
                                   created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        group = zarr.open_group(zarr_location(location), mode="a" if shared else "w", zarr_format=3)
        for split, count in meta.positions.items():
            for name in data_arrays(meta):
                width = _width(meta, name)
                group.create_array(f"{split}/{name}", shape=(count, width), dtype=dtypes[name],
                                   chunks=(meta.chunk_rows, width), shards=(meta.shard_rows, width),
                                   compressors=compressors, fill_value=0, dimension_names=["position", None])
            # Chunks of 1: each marker is its own object, so writers of different shards never collide.
            group.create_array(f"{split}/shard_complete", shape=(meta.n_shards(split),), dtype="uint8",
                               chunks=(1,), compressors=None, fill_value=0)
        group.attrs["superstill"] = meta.to_dict()  # last: a half-created store has no metadata
        return cls(location, group, meta, option)

    @classmethod
    def open_for_writing(cls, location: str, expected: LogitStoreMeta | None = None,
                         option: str = "--out") -> "LogitStoreWriter":
        """Reopen an unfinished store to write (more) shards; `expected` must match what it holds."""
        store = cls._open(location, "r+", option)
        meta = store.meta
        if meta.complete:
            raise UserError(f"{option} {location} is already complete; nothing to resume (pass --force to recompute it)")
        diffs = meta.differences(expected) if expected is not None else []
        if diffs:
            raise UserError(f"{option} {location} was started with different settings ({'; '.join(diffs)}); "
                            f"resume with the original settings or pass --force to start over")
        return store

    def write_shard(self, split: str, shard: int, rows: TeacherRows | SampledRows) -> None:
        """Write all arrays of one shard (one zarr write each: a shard file is rewritten per write), then its marker."""
        start, stop = self.shard_range(split, shard)
        meta = self.meta
        if len(rows) != stop - start or rows.k != meta.k or rows.vocab_size != meta.vocab_size:
            raise ValueError(f"{split} shard {shard} needs {stop - start} rows of k={meta.k}, V={meta.vocab_size}; "
                             f"got {len(rows)} rows of k={rows.k}, V={rows.vocab_size}")
        if rows.temperatures != meta.temperatures:
            raise ValueError(f"rows have temperatures {rows.temperatures}, the store {meta.temperatures}")
        if isinstance(rows, SampledRows) != (meta.rows == "sampled") or getattr(rows, "samples", 0) != meta.samples:
            raise ValueError(f"{type(rows).__name__} cannot go into a store of {meta.rows} rows (samples {meta.samples})")
        if len(rows) and not 0 <= int(rows.ids.min()) <= int(rows.ids.max()) < meta.vocab_size:
            raise ValueError(f"{split} shard {shard}: ids outside [0, {meta.vocab_size})")
        for name, values in rows.to_stored(smallest_uint_dtype(meta.vocab_size)).items():
            self.array(split, name)[start:stop] = values
        self.array(split, "shard_complete")[shard] = 1  # last: the shard counts only now

    def finish(self, stats: dict[str, Any] | None = None) -> LogitStoreMeta:
        """Check every shard is written, record stats (caller's keys win), then mark complete."""
        for split in self.meta.splits:
            missing = sorted(set(range(self.meta.n_shards(split))) - self.completed_shards(split))
            if missing:
                raise UserError(f"{self.option} {self.location}: cannot finish, {split} shards "
                                f"{_ranges(missing)} are not written; resume the dump")
        stored = sum(self.array(split, name).nbytes_stored()
                     for split in self.meta.splits for name in data_arrays(self.meta) + ("shard_complete",))
        total = sum(self.meta.positions.values())
        row_stats = ({"distinct_ids": {s: self._distinct_ids(s) for s in self.meta.splits}} if self.meta.rows == "sampled"
                     else {"topk_mass": {s: self._topk_mass(s) for s in self.meta.splits}})
        self.meta.stats = {**row_stats, "stored_bytes": stored,
                           "bytes_per_position": stored / max(total, 1), **(stats or {})}
        self.meta.complete = True
        write_card(self.location, self.meta)  # README.md, rendered from the final metadata; complete is still last
        self.group.attrs["superstill"] = self.meta.to_dict()
        return self.meta

    def _distinct_ids(self, split: str) -> dict[str, float]:
        """Mean and max distinct ids per position of a sampled split."""
        return distinct_stats(self.array(split, "draw_deltas")[slice(*self.shard_range(split, shard))]
                              for shard in range(self.meta.n_shards(split)))

    def _topk_mass(self, split: str) -> dict[str, dict[str, float]]:
        """Mean and min of 1 - tail over the split's positions, per listed T."""
        count, total, low = 0, np.zeros(len(self.meta.temperatures)), np.ones(len(self.meta.temperatures))
        for shard in range(self.meta.n_shards(split)):
            tail = self.array(split, "tail_mass")[slice(*self.shard_range(split, shard))].astype(np.float64)
            count, total, low = count + len(tail), total + (1 - tail).sum(0), np.minimum(low, (1 - tail).min(0))
        return {f"{t:g}": {"mean": float(total[j] / max(count, 1)), "min": float(low[j])}
                for j, t in enumerate(self.meta.temperatures)}


def _ranges(items: list[int]) -> str:
    """The first few of a list of shard numbers, for messages."""
    return ", ".join(map(str, items[:12])) + (", ..." if len(items) > 12 else "")


class LogitStore(_Store):
    """Read access to a logit store (complete unless asked otherwise).

    `open` checks the metadata (fields present, of their types), every array's zarr.json, shape and
    dtype and, with `check_files`, that every shard file that should exist does (one listing per array:
    zarr would read a missing one as zeros); `read_rows` turns a chunk failing its CRC32C into a
    UserError naming the array, rows and file. So a damaged store is a one-line error, never a traceback.
    """

    @classmethod
    def open(cls, location: str, require_complete: bool = True, option: str = "--teacher-logits",
             check_files: bool = True) -> "LogitStore":
        store = cls._open(location, "r", option)
        meta = store.meta
        if require_complete and not meta.complete:
            done = sum(len(store.completed_shards(split)) for split in meta.splits)
            raise UserError(f"{option} {location} is incomplete ({done} of {sum(map(meta.n_shards, meta.splits))} "
                            f"shards written, an interrupted dump); finish it with `pipeline dump-teacher ... --resume`")
        missing = store.missing_files() if check_files else []
        if missing:
            raise UserError(f"{option} {location}: {len(missing)} shard file(s) missing (first: {missing[0]}; zarr "
                            f"would read them as zeros); {DAMAGED_FIX}")
        return store

    def read_rows(self, split: str, start: int, stop: int) -> TeacherRows | SampledRows:
        """Rows [start, stop) of a split as CPU tensors."""
        if not 0 <= start <= stop <= self.positions(split):
            raise ValueError(f"rows [{start}, {stop}) are outside {split}'s {self.positions(split)} positions")
        arrays = {}
        for name in data_arrays(self.meta):
            try:
                arrays[name] = self.array(split, name)[start:stop]
            except Exception as error:  # crc32c raises ValueError; a damaged frame or index other types
                raise self._damaged(split, name, start, stop, error) from None
        if self.meta.rows == "sampled":
            return SampledRows.from_stored(arrays, self.meta.samples, self.meta.temperatures[0], self.meta.vocab_size)
        return TeacherRows.from_stored(arrays, self.meta.temperatures, self.meta.vocab_size)

    def _damaged(self, split: str, name: str, start: int, stop: int, error: Exception) -> UserError:
        """A UserError naming the array, rows and shard file (the failing chunk when it can be found)."""
        shards = range(start // self.meta.shard_rows, (stop - 1) // self.meta.shard_rows + 1)
        found = [problem for shard in shards for problem in self._locate(split, name, shard)]
        if not found:
            files = ", ".join(self.shard_file(split, name, shard) for shard in list(shards)[:2])
            found = [f"{split}/{name} in {files} cannot be decoded ({first_line(error)})"]
        return UserError(f"{self.option} {self.location}: cannot read {split} rows {start}-{stop - 1}: {found[0]}; "
                         f"{DAMAGED_FIX}")

    def check_matches(self, tokens: TokenStore, split: str) -> None:
        """UserError unless these rows were computed from exactly `tokens`' `split`."""
        mine, theirs = self.meta, f"--tokens {tokens.location}"
        for differs, what in [
                (mine.vocab_size != tokens.vocab_size, f"has a vocabulary of {mine.vocab_size:,} ids but {theirs} "
                                                       f"has {tokens.vocab_size:,}"),
                (mine.token_fingerprint != tokens.fingerprint, f"was computed from tokens with fingerprint "
                 f"{mine.token_fingerprint[:16]}, not {theirs} ({tokens.fingerprint[:16]})"),
                (self.positions(split) != tokens.split_size(split), f"has {self.positions(split):,} {split} rows "
                 f"but {theirs} has {tokens.split_size(split):,} {split} tokens")]:
            if differs:
                raise UserError(f"{self.option} {self.location} {what}; dump the teacher again for these tokens")

    def verify(self) -> list[str]:
        """Read every chunk of every array; one message per problem (empty: the store is sound)."""
        problems, lost = [], set(self.missing_files())
        for split in self.meta.splits:
            unwritten = sorted(set(range(self.meta.n_shards(split))) - self.completed_shards(split))
            if unwritten:
                problems.append(f"{split}: {len(unwritten)} of {self.meta.n_shards(split)} shards are not written "
                                f"({_ranges(unwritten)}); finish with `pipeline dump-teacher ... --resume`")
            problems += [f"{split}/shard_complete: marker file {path} is missing" for path in sorted(lost)
                         if path.startswith(object_path(self.location, f"{split}/shard_complete/"))]
            for shard in sorted(self.completed_shards(split)):
                problems += self._verify_shard(split, shard, lost)
        return problems

    def _verify_shard(self, split: str, shard: int, lost: set[str]) -> list[str]:
        start, stop = self.shard_range(split, shard)
        problems = []
        for name in data_arrays(self.meta):
            path = self.shard_file(split, name, shard)
            if path in lost:  # zarr would silently read a missing shard as zeros
                problems.append(f"{split}/{name}: shard {shard} file {path} is missing")
                continue
            try:
                self.array(split, name)[start:stop]
            except Exception as error:  # noqa: BLE001 - any decode failure is a finding
                problems += (self._locate(split, name, shard) or
                             [f"{split}/{name}: shard {shard} in {path} cannot be read: {first_line(error)}"])
        if problems:
            return problems
        checks = self.read_rows(split, start, stop).problems()  # impossible values, by row kind
        return [f"{split} shard {shard} (rows {start}-{stop - 1}): {what}" for what, bad in checks.items() if bad]

    def _locate(self, split: str, name: str, shard: int) -> list[str]:
        """What is wrong with one shard file: its failing chunks or index, or why it cannot be fetched."""
        path = self.shard_file(split, name, shard)
        try:
            data = read_bytes(path)
        except Exception as error:  # noqa: BLE001 - a file that cannot be fetched is the finding
            return [f"{split}/{name}: shard {shard} file {path} cannot be read ({first_line(error)})"]
        return self._crc_problems(split, name, shard, path, data)

    def _crc_problems(self, split: str, name: str, shard: int, path: str, data: bytes) -> list[str]:
        """The inner chunks (or the index) of shard file bytes `data` whose CRC32C fails; [] if none does."""
        chunks = self.meta.shard_rows // self.meta.chunk_rows
        index_bytes = data[max(0, len(data) - 16 * chunks - 4):]
        if len(index_bytes) != 16 * chunks + 4 or not crc_ok(index_bytes):
            return [f"{split}/{name}: shard {shard} index fails its CRC32C check in {path}"]
        index = np.frombuffer(index_bytes[:-4], dtype="<u8").reshape(chunks, 2)  # (offset, length) per chunk
        bad = [c for c, (offset, length) in enumerate(index)
               if offset != 2**64 - 1 and not crc_ok(data[offset:offset + length])]
        first = shard * self.meta.shard_rows + np.array(bad, dtype=np.int64) * self.meta.chunk_rows
        return [f"{split}/{name}: chunk {c} of shard {shard} (rows {a}-{a + self.meta.chunk_rows - 1}) fails its "
                f"CRC32C check in {path}" for c, a in zip(bad, first)]

    def integrity(self, max_bytes: int) -> tuple[str, list[str]]:
        """(one-line status, problems): missing shard files, and the CRC32C of every chunk and shard index of
        the written shards when their files hold at most `max_bytes` in all (read raw, not decoded:
        `inspect` uses this; `verify` decodes everything)."""
        listed = self.listings()
        missing = self.missing_files(listed)
        if missing:
            return "shard files missing", [f"shard file {path} is missing" for path in missing]
        files = [(split, name, shard, self.shard_file(split, name, shard)) for split in self.meta.splits
                 for shard in sorted(self.completed_shards(split)) for name in data_arrays(self.meta)]
        size = sum(size for entries in listed.values() for key, size in entries.items() if key.startswith("c/"))
        if size > max_bytes:
            return (f"{len(files)} shard files present; CRC32C not checked here ({size:,} bytes; "
                    f"`pipeline validate` checks every chunk)"), []
        problems = [p for split, name, shard, _ in files for p in self._locate(split, name, shard)]
        return f"{len(files)} shard files present, CRC32C " + ("FAILED" if problems else "OK"), problems

    def summary(self) -> str:
        meta, stats = self.meta, self.meta.stats
        state = "complete" if meta.complete else "INCOMPLETE (resume with `pipeline dump-teacher ... --resume`)"
        config = meta.teacher.get("model")
        model = ", ".join(f"{key}={value}" for key, value in sorted(config.items())) if isinstance(config, dict) else "?"
        temps = ", ".join(f"{t:g}" for t in meta.temperatures)
        lines = [f"logit store {self.location}",
                 f"  format        {meta.format} v{meta.version} (written by superstill {meta.tool_version}), {state}",
                 f"  tokens        {meta.tokens or '?'} (fingerprint {meta.token_fingerprint[:16]})",
                 f"  teacher       sha256 {str(meta.teacher.get('checkpoint_sha256', '?'))[:16]}; {model}",
                 f"  distribution  " + (describe_sampled(meta) if meta.rows == "sampled" else
                                         f"top-{meta.k} of {meta.vocab_size:,} ids, exact at T = {temps}") +
                 f"; context {meta.context}, stride {meta.stride}",
                 f"  precision     {meta.precision}: {PRECISIONS[meta.precision]}",
                 f"  layout        shards of {meta.shard_rows:,} rows, chunks of {meta.chunk_rows:,}, "
                 f"codec {meta.codec} + crc32c, ids {meta.dtypes.get('ids', meta.dtypes.get('draw_deltas', '?'))}"]
        lines += [f"  {split:<13} {meta.positions[split]:,} positions, {len(self.completed_shards(split))}/"
                  f"{meta.n_shards(split)} shards written" for split in meta.splits]
        try:
            lines += _stats_lines(stats)
        except (TypeError, ValueError, KeyError, AttributeError):  # free-form, so possibly malformed
            lines.append(f"  stats         (malformed) {json.dumps(stats)[:200]}")
        return "\n".join(lines + [f"  created       {meta.created_at}"])


def _stats_lines(stats: dict[str, Any]) -> list[str]:
    """The summary's lines for `finish`'s stats: size, top-k mass per split and T, the dump's figures."""
    lines = []
    if "bytes_per_position" in stats:
        lines.append(f"  size          {stats['stored_bytes']:,} bytes, {stats['bytes_per_position']:.1f} bytes/position")
    lines += [f"  top-k mass    {split}: " + "; ".join(f"T={t} mean {v['mean']:.4f} min {v['min']:.4f}"
                                               for t, v in per_t.items())
              for split, per_t in stats.get("topk_mass", {}).items()]
    lines += [f"  distinct ids  {split}: mean {v['mean']:.2f} per position, max {v['max']}"
              for split, v in stats.get("distinct_ids", {}).items()]
    return lines + [f"  {key:<13} {stats[key]}" for key in sorted(stats)
                    if key not in ("topk_mass", "distinct_ids", "stored_bytes", "bytes_per_position")]

