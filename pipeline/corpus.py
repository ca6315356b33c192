"""A corpus on disk: which files it has, how each becomes text, and which documents are held out.

A corpus is any mix of text files and directories; a directory contributes its `*.txt` files,
recursively, in sorted order, and explicitly named files are taken whatever their extension. Each
file is one document. Text is read as UTF-8 (a leading byte-order mark is dropped) and a Project
Gutenberg license header and footer are removed when their marker lines are present.

Files that are not text are *skipped* (with a reason recorded in the token store's manifest)
rather than fatal: a corpus scraped from somewhere often has a stray binary or an empty file.
Mistakes that would silently produce a bad store are errors instead: a path that does not exist,
a directory without text files, and a run of over `MAX_CHUNK_CHARS` characters without whitespace.
Such a run is minified data or base64, not prose: its fragments would pollute the vocabulary, and
since the tokenizer can only cut text at whitespace, spaCy would hold it as one Doc (measured
~200 B per character: a 3M-character run of "a.b,c" took 2.5 s and ~600 MB). Long *lines* are
fine: a file with no line breaks at all is ordinary (exports, scraped pages), and the tokenizer
works on it in bounded pieces (pipeline/tokenizer.py).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pipeline.errors import UserError

TEXT_SUFFIX = ".txt"
MAX_CHUNK_CHARS = 1_000_000
"""Longest run of non-whitespace characters accepted; a longer one is an error naming the file and offset."""
_WHITESPACE = re.compile(r"\s")  # for str patterns, exactly `str.isspace`: where the tokenizer cuts

# Marker lines seen in Project Gutenberg texts across the years, e.g.
#   *** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***      (2000s)
#   *** START OF THE PROJECT GUTENBERG EBOOK 1524 ***         (current)
#   ***START OF THE PROJECT GUTENBERG EBOOK ...***            (no space)
#   *END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*   (1990s etexts: header ends here)
#   *** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***
#   End of the Project Gutenberg EBook of Hamlet / End of Project Gutenberg's Hamlet
#                                                             (the line just before the END marker)
_HEADER_END = re.compile(
    r"^[ \t]*(\*+[ \t]*START OF (THE |THIS )?PROJECT GUTENBERG|\*END\*?[ \t]*THE SMALL PRINT)",
    re.IGNORECASE | re.MULTILINE)
_FOOTER_START = re.compile(r"^[ \t]*\**[ \t]*END OF (THE |THIS )?PROJECT GUTENBERG", re.IGNORECASE | re.MULTILINE)


@dataclass
class Document:
    """One input file as read from disk: its identity, and its text or why it was skipped."""

    path: str
    """The path as found (relative if the corpus was given relatively)."""
    sha256: str
    """Hex digest of the file's bytes."""
    n_bytes: int
    """Size of the file in bytes."""
    text: str | None
    """The text after decoding and Gutenberg stripping; None when skipped."""
    skipped: str | None = None
    """Why the file was not used (not UTF-8, binary, empty), or None."""


def find_corpus_files(paths: Sequence[str | Path], option: str = "CORPUS") -> list[Path]:
    """Expand files and directories into the ordered list of files to read (duplicates dropped)."""
    if not paths:
        raise UserError(f"{option}: no input given; pass .txt files or directories of them")
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            texts = sorted(p for p in path.rglob(f"*{TEXT_SUFFIX}") if p.is_file())
            if not texts:
                raise UserError(f"{option} {given}: directory has no {TEXT_SUFFIX} files; "
                                f"point it at a directory of {TEXT_SUFFIX} files or name the files")
            found.extend(texts)
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{option} {given}: no such file or directory; check the path")
    return _unique(found)


def _unique(paths: Iterable[Path]) -> list[Path]:
    """First occurrence of each file, so naming a file and its directory reads it once."""
    seen: set[Path] = set()
    unique = []
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def read_document(path: str | Path) -> Document:
    """Read, hash, decode and strip one file; files that are not usable text come back skipped."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read it ({error.strerror}); check its permissions") from None
    digest = hashlib.sha256(data).hexdigest()
    text, reason = decode_text(data)
    if text is not None:
        check_chunk_lengths(text, str(path))
        text = strip_gutenberg(text)
        if not text.strip():
            text, reason = None, "empty after removing the Project Gutenberg header and footer"
    return Document(str(path), digest, len(data), text, reason)


def decode_text(data: bytes) -> tuple[str | None, str | None]:
    """(text, None) for UTF-8 text, else (None, reason to skip)."""
    if not data.strip():
        return None, "empty"
    if b"\x00" in data:
        return None, "binary (contains NUL bytes; UTF-16 text must be converted to UTF-8)"
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        return None, f"not UTF-8 text (invalid byte at offset {error.start})"
    return (text, None) if text.strip() else (None, "empty")


def check_chunk_lengths(text: str, path: str, limit: int = MAX_CHUNK_CHARS) -> None:
    """Refuse a run of more than `limit` characters without whitespace (not prose: data, base64).

    Scans the text once in C (~10 ms per million characters); texts no longer than `limit` are
    not scanned at all.
    """
    if len(text) <= limit:
        return
    match = _long_chunk(limit).search(text)
    if match is None:
        return
    space = _WHITESPACE.search(text, match.end())
    length = (space.start() if space else len(text)) - match.start()
    raise UserError(f"{path}: {length:,} characters without whitespace at character {match.start():,}, over "
                    f"the {limit:,}-character limit for one word (minified data or base64, not prose); "
                    f"leave the file out or remove that run")


@functools.lru_cache(maxsize=4)
def _long_chunk(limit: int) -> re.Pattern[str]:
    """Matches the first `limit + 1` characters of a longer whitespace-free run. The lookbehind anchors
    a match at the start of a run, so each run is scanned once (without it, every position inside a
    long but legal run would rescan the rest of it: quadratic)."""
    return re.compile(r"(?<!\S)\S{%d}" % (limit + 1))


def strip_gutenberg(text: str) -> str:
    """Drop everything up to the end of the first START marker line and from the next END marker
    line on. Text without markers comes back unchanged, so plain files pass through safely.
    """
    start = 0
    header = _HEADER_END.search(text)
    if header:
        line_end = text.find("\n", header.end())
        start = len(text) if line_end < 0 else line_end + 1
    footer = _FOOTER_START.search(text, start)
    end = footer.start() if footer else len(text)
    return text[start:end]


def choose_val_documents(token_counts: Sequence[int], fraction: float, seed: int) -> np.ndarray:
    """Which documents to hold out: whole documents, drawn in a seeded random order, until they
    hold at least `fraction` of all tokens. At least one document stays in train.

    Returns a boolean mask over documents (True = validation).
    """
    counts = np.asarray(token_counts, dtype=np.int64)
    is_val = np.zeros(counts.size, dtype=bool)
    if fraction <= 0 or counts.size < 2:
        return is_val
    target = fraction * counts.sum()
    held = 0
    for taken, doc in enumerate(np.random.default_rng(seed).permutation(counts.size)):
        if held >= target or taken == counts.size - 1:
            break
        is_val[doc] = True
        held += counts[doc]
    return is_val
