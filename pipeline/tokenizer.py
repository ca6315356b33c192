"""Corpus files to word tokens with spaCy's rule-based English tokenizer, in parallel workers.

Tokens are those of `spacy.blank("en").tokenizer` run on a whole document, minus its whitespace
tokens. spaCy first cuts text into runs of whitespace and non-whitespace and tokenizes each
non-whitespace run ("chunk") on its own, with a per-chunk cache. So the same tokens come from
handing spaCy smaller pieces: lines (the issue's advice: whole ~150 KB files were measured several
times slower per token), or, as here, each *distinct* chunk once. `str.split()` cuts at exactly
the characters spaCy treats as whitespace (both use `str.isspace`), and a memo maps a chunk to its
tokens, so a corpus costs one spaCy call per distinct chunk (~67k for 1.15M Shakespeare tokens)
instead of one per line (~147k). tests/test_tokenizer.py checks this against spaCy's own
tokenizer on whole texts (all 42 Shakespeare files agree, lowercased or not).

One known difference, shared with line-by-line feeding: spaCy's special-case matcher can pair a
token with one from the next chunk when a single space separates them, and that bogus match can
suppress a real special case. E.g. whole-text spaCy gives `x' ''tis` -> x ' ' ' tis but
`''tis` -> '' tis; chunk by chunk we give x ' '' tis, the same tokens whatever the neighbours.

Each file is one task. A worker returns its tokens interned: the file's distinct words (a short
list of str) and an int32 index per token into that list. That pickles in milliseconds, unlike
spaCy Docs, and lets the parent build one vocabulary without ever seeing a token string twice.

A file's text is processed in pieces of about `PIECE_CHARS` characters, each cut just before a
whitespace character. Cutting at whitespace cannot change the chunks (so not the tokens either),
and it bounds the working set (the chunk list, its dicts, the int64 arrays of `_expand`) by the
piece size rather than the file size: a 20M-character file with no line breaks is fine. Only the
file's decoded text and its (n_tokens,) int32 index grow with the file. Words are numbered in
order of first appearance across pieces, exactly as one whole-text pass numbers them.

Lowercasing (the default) is applied to the text *before* tokenizing: spaCy's special cases are
case-sensitive ("can't" -> "ca n't" but "CAN'T" stays whole), so lowercasing first gives one
spelling of each token. It is done piece by piece, which equals lowercasing the whole text:
`str.lower` maps each character alone except for Greek final sigma, whose context ends at
whitespace, and it maps whitespace to itself and nothing else to whitespace.
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from pipeline.corpus import read_document

LANGUAGE = "en"
MEMO_CHUNKS = 500_000
"""Chunks remembered per process (~200 B each); when full, memo and spaCy vocabulary start afresh,
which bounds a worker's memory on any corpus without changing a single token."""
MAX_DEFAULT_WORKERS = 8
PIECE_CHARS = 2_000_000
"""Characters of a file's text tokenized at a time (then on to the next whitespace). Measured on a
20M-character one-line file: the tokenizer's peak RSS grew by ~100 MB (whole text at once: ~470 MB);
1M-character pieces saved only ~15 MB more, 4M cost ~40 MB more; each piece re-looks-up its distinct
chunks, ~10-15% more CPU there. Files shorter than this (nearly all) are one piece."""

_WHITESPACE = re.compile(r"\s")  # for str patterns, exactly `str.isspace`: where `str.split` and spaCy cut

_tokenizer: "ChunkTokenizer | None" = None  # this process's: fresh per `tokenize_files`, inherited by forks


@dataclass
class FileTokens:
    """One file, tokenized: identity for the manifest plus interned tokens (or a skip reason)."""

    path: str
    """The file as found."""
    sha256: str
    """Hex digest of its bytes."""
    n_bytes: int
    """Its size in bytes."""
    skipped: str | None = None
    """Why it was not used, or None."""
    words: list[str] = field(default_factory=list)
    """Distinct tokens of the file, in no meaningful order."""
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    """(n_tokens,) int32: token i of the file is words[index[i]]."""

    @property
    def n_tokens(self) -> int:
        return int(self.index.size)

    def tokens(self) -> list[str]:
        """The token strings in order (for tests and small files; the pipeline never needs them)."""
        return [self.words[i] for i in self.index.tolist()]


def make_spacy_tokenizer():
    """spaCy's blank English tokenizer, set up to produce token strings only."""
    import spacy  # deferred: importing spaCy takes seconds, and `pipeline --help` should not

    tokenizer = spacy.blank(LANGUAGE).tokenizer
    # Each new string's lexeme would get ~20 attributes (like_num, shape, ...) computed by Python
    # functions. Only the text is read here; skipping them was measured 1.7x faster overall.
    tokenizer.vocab.lex_attr_getters = {}
    return tokenizer


def spacy_version() -> str:
    import spacy

    return spacy.__version__


class ChunkTokenizer:
    """Text -> (distinct words, index per token), calling spaCy once per distinct chunk."""

    def __init__(self, memo_chunks: int = MEMO_CHUNKS, piece_chars: int = PIECE_CHARS) -> None:
        self.memo_chunks = memo_chunks
        self.piece_chars = piece_chars
        self._restart()

    def _restart(self) -> None:
        self.spacy = make_spacy_tokenizer()
        self.memo: dict[str, tuple[str, ...]] = {}

    def chunk_tokens(self, distinct: list[str]) -> list[tuple[str, ...]]:
        """spaCy's tokens for each of these distinct whitespace-free chunks, memoized.

        A piece repeats most of the previous pieces' chunks, so the look-ups are C-level loops and
        Python runs only per unseen chunk. The memo starts afresh before a piece whose new chunks
        would overflow it: it holds at most `memo_chunks` plus one piece's distinct chunks.
        """
        unseen = list(itertools.filterfalse(self.memo.__contains__, distinct))
        if self.memo and len(self.memo) + len(unseen) > self.memo_chunks:
            self._restart()
            unseen = distinct
        for chunk in unseen:
            self.memo[chunk] = tuple(token.text for token in self.spacy(chunk))
        return list(map(self.memo.__getitem__, distinct))

    def __call__(self, text: str, lowercase: bool = False) -> tuple[list[str], np.ndarray]:
        """The text's distinct words (in order of first appearance) and (n_tokens,) int32 index into them."""
        word_ids: dict[str, int] = {}  # the file's words so far -> id; shared by all pieces
        parts = []
        for piece in whitespace_pieces(text, self.piece_chars):
            parts.append(self._tokenize_piece(piece.lower() if lowercase else piece, word_ids))
        if len(parts) <= 1:  # the usual case, no copy
            return list(word_ids), parts[0] if parts else np.zeros(0, np.int32)
        return list(word_ids), np.concatenate(parts)

    def _tokenize_piece(self, piece: str, word_ids: dict[str, int]) -> np.ndarray:
        """(n_tokens_in_piece,) int32 ids in `word_ids`, which gains the piece's new words in order."""
        # Every per-token and per-chunk step below is a C-level loop (split, dict.fromkeys, map,
        # filterfalse); Python runs once per chunk never seen before.
        chunks = piece.split()  # whitespace-free runs, cut exactly where spaCy cuts
        distinct = list(dict.fromkeys(chunks))
        number = dict(zip(distinct, range(len(distinct))))
        chunk_ids = np.fromiter(map(number.__getitem__, chunks), np.int64, len(chunks))  # (n_chunks,)
        del chunks, number  # the piece's largest objects; gone before the arrays below are built
        token_lists = self.chunk_tokens(distinct)
        lengths = np.fromiter(map(len, token_lists), np.int64, len(token_lists))  # (n_distinct,)
        flat_words = list(itertools.chain.from_iterable(token_lists))  # every distinct chunk's tokens
        new_words = itertools.filterfalse(word_ids.__contains__, dict.fromkeys(flat_words))
        word_ids.update(zip(new_words, itertools.count(len(word_ids))))
        flat = np.fromiter(map(word_ids.__getitem__, flat_words), np.int32, len(flat_words))
        return _expand(chunk_ids, lengths, flat)


def whitespace_pieces(text: str, size: int) -> Iterator[str]:
    """Consecutive pieces of `text`: each runs from its start to the first whitespace character at
    or after `size` characters (or to the end), so the pieces' chunks (`str.split`) are exactly the
    text's. A piece is longer than `size` only by the chunk that straddles the mark.
    """
    if size < 1:
        raise ValueError(f"piece size must be at least 1, not {size}")
    start = 0
    while start < len(text):
        cut = _WHITESPACE.search(text, start + size) if start + size < len(text) else None
        end = cut.start() if cut else len(text)
        yield text[start:end]  # the whole text itself (no copy) when it is one piece
        start = end


def _expand(chunk_ids: np.ndarray, lengths: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """Replace each chunk occurrence by its run of word ids in `flat`: (n_tokens,) int32."""
    starts = np.cumsum(lengths) - lengths  # (n_distinct,) where each chunk's run begins in flat
    run_lengths = lengths[chunk_ids]  # (n_chunks,)
    run_ends = np.cumsum(run_lengths)  # (n_chunks,) end of each occurrence in the output
    # Output position p of occurrence k reads flat[starts[c_k] + (p - (run_ends[k] - run_lengths[k]))].
    offsets = np.repeat(starts[chunk_ids] - (run_ends - run_lengths), run_lengths)
    return flat[offsets + np.arange(offsets.size)].astype(np.int32, copy=False)


def default_workers() -> int:
    """Usable CPU cores (respecting affinity masks), capped: more rarely helps a file-level pool."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


def tokenize_file(path: str | Path, lowercase: bool = True) -> FileTokens:
    """Read one file and tokenize it with this process's tokenizer (the worker task)."""
    document = read_document(path)
    result = FileTokens(document.path, document.sha256, document.n_bytes, document.skipped)
    if document.text is None:
        return result
    if _tokenizer is None:
        _new_tokenizer()
    result.words, result.index = _tokenizer(document.text, lowercase)
    return result


def tokenize_files(paths: Sequence[str | Path], lowercase: bool = True, workers: int = 1,
                   start_method: str | None = None) -> Iterator[FileTokens]:
    """Tokenize files in order, with `workers` processes (1: in this process, no pool).

    Results come back in input order whatever the worker count, so output never depends on it.
    A `UserError` raised for a file in a worker is re-raised here and stops the pool.
    """
    paths = [str(p) for p in paths]
    task = functools.partial(tokenize_file, lowercase=lowercase)
    # A fresh tokenizer per corpus: forked workers inherit it with spaCy already imported (importing
    # it in each worker costs seconds), and no memory or memo carries over between runs.
    _new_tokenizer()
    if workers <= 1 or len(paths) <= 1:
        yield from map(task, paths)
        return
    method = start_method or default_start_method()
    initializer = _ignore_interrupts if method == "fork" else _init_spawned_worker
    with multiprocessing.get_context(method).Pool(min(workers, len(paths)), initializer=initializer) as pool:
        # chunksize 1: files differ in size by 100x, so hand them out one at a time.
        yield from pool.imap(task, paths, chunksize=1)


def default_start_method() -> str:
    """fork where available: a spawned worker must import spaCy first (~3 s here), which is longer
    than tokenizing a 1M-token corpus. Workers only run spaCy, numpy and file reads, which need no
    lock a parent thread could hold at fork time; the code is spawn-safe too (top-level task,
    picklable arguments, tokenizer built by the pool initializer)."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _new_tokenizer() -> None:
    global _tokenizer
    _tokenizer = ChunkTokenizer()


def _init_spawned_worker() -> None:
    _ignore_interrupts()
    _new_tokenizer()


def _ignore_interrupts() -> None:
    """Workers ignore Ctrl-C; the parent gets it, and leaving the pool's `with` terminates them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
