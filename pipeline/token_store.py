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
from pipeline.storage import atomic_output, exists

FORMAT_NAME = "superstill.tokens"
FORMAT_VERSION = 1
SPLITS = ("train", "val")
UNK, EOD = "<unk>", "<eod>"
SPECIAL_TOKENS = (UNK, EOD)  # ids 0 and 1, always
CHUNK_TOKENS = 1 << 20  # 2-4 MiB of ids per chunk: few reads, still streamable


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TokenStoreMeta":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


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
    with atomic_output(location, force) as target:
        group = zarr.open_group(target, mode="w", zarr_format=3)
        meta.complete = False
        group.attrs.update({"superstill": meta.to_dict(), "vocabulary": list(vocab)})
        for name, ids in arrays.items():
            array = group.create_array(
                name, shape=ids.shape, dtype=dtype, chunks=(max(1, min(CHUNK_TOKENS, ids.size)),),
                compressors=[ZstdCodec(level=3), Crc32cCodec()], dimension_names=["position"])
            if ids.size:
                array[:] = ids
        meta.complete = True
        group.attrs["superstill"] = meta.to_dict()
    return TokenStore.open(location)


class TokenStore:
    """Read access to a finished token store."""

    def __init__(self, location: str, group: zarr.Group, meta: TokenStoreMeta, vocab: list[str]):
        self.location, self.group, self.meta, self.vocab = location, group, meta, vocab

    @classmethod
    def open(cls, location: str, option: str = "--tokens") -> "TokenStore":
        if not exists(location):
            raise UserError(f"{option} {location}: no such token store; create one with `pipeline tokenize`")
        try:
            group = zarr.open_group(str(location), mode="r", zarr_format=3)
            attrs = group.attrs.asdict()
        except Exception as error:  # zarr raises several types for "not a group"
            raise UserError(f"{option} {location} is not a token store ({type(error).__name__}); "
                            f"create one with `pipeline tokenize`") from None
        if "superstill" not in attrs or attrs["superstill"].get("format") != FORMAT_NAME:
            raise UserError(f"{option} {location} is not a token store (no {FORMAT_NAME} metadata)")
        meta = TokenStoreMeta.from_dict(attrs["superstill"])
        if not meta.complete:
            raise UserError(f"{option} {location} is incomplete (an interrupted `pipeline tokenize`); re-run it with --force")
        return cls(str(location), group, meta, list(attrs["vocabulary"]))

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
        return self.group[split]

    def read(self, split: str) -> np.ndarray:
        """All ids of a split, in memory (2-4 bytes per token: 1B tokens need 2-4 GB)."""
        return np.asarray(self.array(split)[:])

    def decode(self, ids) -> list[str]:
        return [self.vocab[int(i)] for i in ids]

    def summary(self) -> str:
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
        lines.append("  sample        " + " ".join(self.decode(self.array("train")[:24])))
        return "\n".join(lines)
