"""The token store: a Zarr v3 group holding a tokenized corpus, its vocabulary and provenance.

Layout (every later stage reads this; see README "Token store"):

    STORE/zarr.json            group; attributes["superstill"] = TokenStoreMeta.to_dict()
    STORE/train/               1-D array of token ids (uint16 when the vocabulary fits, else uint32)
    STORE/val/                 1-D array, the held-out documents, same dtype

Documents are concatenated with the end-of-document id between (and after) them, so a window may
cross a document boundary exactly as in the paper's plain language-model training. The fingerprint
is a sha256 over the vocabulary and every split's ids: logit stores record it to prove which tokens
they were computed from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from pipeline import __version__
from pipeline.errors import UserError
from pipeline.storage import TOKENS, atomic_output
from pipeline.store_checks import (chunk_grid, damaged_objects, first_line, list_objects, missing_objects,
                                   object_path, open_array, open_group, parse_meta)

FORMAT_NAME = "superstill.tokens"
FORMAT_VERSION = 1
SPLITS = ("train", "val")
UNK, EOD = "<unk>", "<eod>"
SPECIAL_TOKENS = (UNK, EOD)  # ids 0 and 1, always
CHUNK_TOKENS = 1 << 20  # 2-4 MiB of ids per chunk: few reads, still streamable
CREATE_HINT = "create one with `pipeline tokenize`"
DAMAGED_FIX = "the token store is damaged: re-download it or re-create it with `pipeline tokenize ... --force`"


def smallest_uint_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds ids 0..vocab_size-1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


@dataclass
class TokenStoreMeta:
    """Everything recorded about a token store; round-trips through `to_dict`/`from_dict`."""

    vocab_size: int
    """Number of ids, special tokens included."""
    dtype: str
    """numpy dtype name of the id arrays."""
    tokenizer: dict[str, Any]
    """How text became tokens: spaCy version, language, lowercase, vocabulary clipping, seed."""
    counts: dict[str, int]
    """Tokens per split, documents per split, unknown-token count, vocabulary coverage."""
    manifest: list[dict[str, Any]]
    """One entry per input file: path, sha256, bytes, tokens, split (or why it was skipped)."""
    fingerprint: str = ""
    """sha256 over vocabulary and ids; filled in by `write_token_store`."""
    special_tokens: dict[str, int] = field(default_factory=lambda: {t: i for i, t in enumerate(SPECIAL_TOKENS)})
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION
    tool_version: str = __version__
    complete: bool = False

    def __post_init__(self) -> None:
        if self.format != FORMAT_NAME:
            raise UserError(f"not a token store (format {self.format!r}, expected {FORMAT_NAME!r})")
        if self.version > FORMAT_VERSION:
            raise UserError(f"token store format version {self.version} is newer than this tool ({FORMAT_VERSION}); upgrade superstill")
        if self.vocab_size < len(SPECIAL_TOKENS):
            raise UserError(f"token store vocabulary of {self.vocab_size} ids is too small")
        for token in SPECIAL_TOKENS:
            if isinstance(self.special_tokens.get(token), bool) or not isinstance(self.special_tokens.get(token), int):
                raise UserError(f"special_tokens must give {token}'s id, got {self.special_tokens!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "token store metadata") -> "TokenStoreMeta":
        """From stored metadata: every field present and of its type (a UserError naming `where` if not);
        keys this version does not know are ignored."""
        return parse_meta(cls, data, where)


def compute_fingerprint(vocab: list[str], splits: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    digest.update(f"{FORMAT_NAME}/{FORMAT_VERSION}\n".encode())
    digest.update("\n".join(vocab).encode("utf-8"))
    for name in sorted(splits):
        ids = np.ascontiguousarray(splits[name])
        digest.update(f"\n{name}:{ids.dtype.name}:{ids.size}\n".encode())
        digest.update(ids.tobytes())
    return digest.hexdigest()


def write_token_store(location: str, splits: dict[str, np.ndarray], vocab: list[str], meta: TokenStoreMeta,
                      force: bool = False) -> "TokenStore":
    """Write ids, vocabulary and metadata; the store appears complete only at the very end."""
    if list(vocab[: len(SPECIAL_TOKENS)]) != list(SPECIAL_TOKENS):
        raise ValueError(f"vocabulary must start with {SPECIAL_TOKENS}")
    dtype = smallest_uint_dtype(len(vocab))
    meta.vocab_size, meta.dtype = len(vocab), dtype.name
    arrays = {name: np.ascontiguousarray(splits[name], dtype=dtype) for name in SPLITS}
    meta.fingerprint = compute_fingerprint(vocab, arrays)
    with atomic_output(location, force, kinds=(TOKENS,)) as target:
        group = zarr.open_group(target, mode="w", zarr_format=3)
        meta.complete = False
        group.attrs.update({"superstill": meta.to_dict(), "vocabulary": list(vocab)})
        for name, ids in arrays.items():
            array = group.create_array(
                name, shape=ids.shape, dtype=dtype, chunks=(max(1, min(CHUNK_TOKENS, ids.size)),),
                compressors=[ZstdCodec(level=3), Crc32cCodec()], dimension_names=["position"],
                config={"write_empty_chunks": True})  # every chunk is an object, so a missing one is detectable
            if ids.size:
                array[:] = ids
        meta.complete = True
        group.attrs["superstill"] = meta.to_dict()
    return TokenStore.open(location)


class TokenStore:
    """Read access to a finished token store.

    `open` checks the metadata's types and, with `check_files`, that every chunk object of the id arrays
    exists (one listing per array); `read` turns a chunk that fails its CRC32C into a UserError naming
    the file. So a damaged store is a one-line error, never zeros or a traceback.
    """

    def __init__(self, location: str, group: zarr.Group, meta: TokenStoreMeta, vocab: list[str],
                 arrays: dict[str, zarr.Array], option: str = "--tokens"):
        self.location, self.group, self.meta, self.vocab = location, group, meta, vocab
        self.arrays, self.option = arrays, option

    @classmethod
    def open(cls, location: str, option: str = "--tokens", check_files: bool = True) -> "TokenStore":
        location = str(location)
        group, attrs = open_group(location, "r", option, "token store", CREATE_HINT)
        stored = attrs.get("superstill")
        if not isinstance(stored, dict) or stored.get("format") != FORMAT_NAME:
            raise UserError(f"{option} {location} is not a token store (no {FORMAT_NAME} metadata)")
        where = f"{option} {object_path(location, 'zarr.json')}: attribute superstill"
        try:
            meta = TokenStoreMeta.from_dict(stored, where)
        except UserError as error:
            raise UserError(f"{error}; {DAMAGED_FIX}") from None
        if not meta.complete:
            raise UserError(f"{option} {location} is incomplete (an interrupted `pipeline tokenize`); re-run it with --force")
        vocab = attrs.get("vocabulary")
        if not (isinstance(vocab, list) and len(vocab) == meta.vocab_size and all(isinstance(w, str) for w in vocab)):
            raise UserError(f"{option} {object_path(location, 'zarr.json')}: attribute vocabulary is not a list of "
                            f"{meta.vocab_size} words; {DAMAGED_FIX}")
        arrays = {split: open_array(group, split, location, option) for split in SPLITS}
        for split, array in arrays.items():
            if array.ndim != 1 or array.dtype != np.dtype(meta.dtype):
                raise UserError(f"{option} {location}: array {split} is {array.dtype}{list(array.shape)}, not 1-D "
                                f"{meta.dtype} as its metadata says; {DAMAGED_FIX}")
        store = cls(location, group, meta, vocab, arrays, option)
        missing = store.missing_files() if check_files else []
        if missing:
            raise UserError(f"{option} {location}: {len(missing)} chunk file(s) of its token ids are missing "
                            f"(first: {missing[0]}; zarr would read them as zeros); {DAMAGED_FIX}")
        return store

    def missing_files(self, listed: dict[str, dict[str, int]] | None = None) -> list[str]:
        """Chunk objects of the id arrays that do not exist (one listing per array; size-0 arrays have none)."""
        listed = listed or {split: list_objects(self.location, split) for split in SPLITS}
        return [path for split, array in self.arrays.items()
                for path in missing_objects(self.location, split, array, chunk_grid(array), listed[split])]

    def integrity(self, max_bytes: int) -> tuple[str, list[str]]:
        """(one-line status, problems): missing chunk files, and every chunk's CRC32C when the id arrays
        hold at most `max_bytes` (`inspect` uses this; reads check the chunks they touch anyway)."""
        listed = {split: list_objects(self.location, split) for split in SPLITS}
        missing = self.missing_files(listed)
        if missing:
            return "chunk files missing", [f"chunk file {path} is missing" for path in missing]
        files = [object_path(self.location, f"{split}/{key}") for split in SPLITS for key in listed[split]
                 if key.startswith("c/")]
        size = sum(size for split in SPLITS for key, size in listed[split].items() if key.startswith("c/"))
        if size > max_bytes:
            return f"{len(files)} chunk files present; CRC32C not checked here ({size:,} bytes; reads check it)", []
        bad = damaged_objects(files)
        status = f"{len(files)} chunk files present, CRC32C " + ("FAILED" if bad else "OK")
        return status, [f"chunk file {path} fails its CRC32C check" for path in bad]

    @property
    def fingerprint(self) -> str:
        return self.meta.fingerprint

    @property
    def vocab_size(self) -> int:
        return self.meta.vocab_size

    @property
    def unk_id(self) -> int:
        return self.meta.special_tokens[UNK]

    @property
    def eod_id(self) -> int:
        return self.meta.special_tokens[EOD]

    def split_size(self, split: str) -> int:
        return int(self.array(split).shape[0])

    def array(self, split: str) -> zarr.Array:
        if split not in SPLITS:
            raise UserError(f"--split {split}: expected one of {', '.join(SPLITS)}")
        return self.arrays[split]

    def read(self, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Ids [start, stop) of a split (all by default), in memory (2-4 bytes per token: 1B tokens need 2-4 GB)."""
        array = self.array(split)
        stop = array.shape[0] if stop is None else min(stop, array.shape[0])
        try:
            return np.asarray(array[start:stop])
        except Exception as error:  # crc32c raises ValueError; a damaged zstd frame other types
            raise self._damaged(split, start, stop, error) from None

    def _damaged(self, split: str, start: int, stop: int, error: Exception) -> UserError:
        """A UserError naming the chunk file(s) of ids [start, stop) that fail their CRC32C."""
        array, size = self.array(split), self.array(split).chunks[0]
        paths = [object_path(self.location, f"{split}/{array.metadata.encode_chunk_key((c,))}")
                 for c in range(start // size, -(-stop // size))]
        try:
            bad = damaged_objects(paths)
        except Exception:  # noqa: BLE001 - cannot even fetch the bytes: name the files and the error
            bad = []
        what = (f"chunk file {bad[0]} fails its CRC32C check" if bad else
                f"{', '.join(paths[:3])} cannot be decoded ({first_line(error)})")
        return UserError(f"{self.option} {self.location}: cannot read {split} tokens {start}-{stop - 1}: {what}; "
                         f"{DAMAGED_FIX}")

    def decode(self, ids) -> list[str]:
        return [self.vocab[int(i)] for i in ids]

    def summary(self, sample: bool = True) -> str:
        meta = self.meta
        lines = [
            f"token store {self.location}",
            f"  format        {meta.format} v{meta.version} (written by superstill {meta.tool_version})",
            f"  fingerprint   {meta.fingerprint}",
            f"  vocabulary    {meta.vocab_size:,} ids ({meta.dtype}); specials {meta.special_tokens}",
            f"  tokenizer     {json.dumps(meta.tokenizer, sort_keys=True)}",
        ]
        for split in SPLITS:
            docs = meta.counts.get(f"{split}_documents", "?")
            lines.append(f"  {split:<13} {self.split_size(split):,} tokens in {docs} documents")
        for key in sorted(k for k in meta.counts if not k.endswith("_documents") and k not in ("train_tokens", "val_tokens")):
            lines.append(f"  {key:<13} {meta.counts[key]}")
        skipped = [m for m in meta.manifest if m.get("skipped")]
        lines.append(f"  files         {len(meta.manifest) - len(skipped)} used, {len(skipped)} skipped")
        for entry in skipped:
            lines.append(f"    skipped {entry['path']}: {entry['skipped']}")
        if sample:
            lines.append("  sample        " + " ".join(self.decode(self.read("train", 0, 24))))
        return "\n".join(lines)
