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

Lowercasing (the default) is applied to the text *before* tokenizing: spaCy's special cases are
case-sensitive ("can't" -> "ca n't" but "CAN'T" stays whole), so lowercasing first gives one
spelling of each token.
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
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

    def __init__(self, memo_chunks: int = MEMO_CHUNKS) -> None:
        self.memo_chunks = memo_chunks
        self._restart()

    def _restart(self) -> None:
        self.spacy = make_spacy_tokenizer()
        self.memo: dict[str, tuple[str, ...]] = {}

    def chunk_tokens(self, chunk: str) -> tuple[str, ...]:
        """spaCy's tokens for one whitespace-free chunk, memoized."""
        tokens = self.memo.get(chunk)
        if tokens is None:
            if len(self.memo) >= self.memo_chunks:
                self._restart()
            tokens = self.memo[chunk] = tuple(token.text for token in self.spacy(chunk))
        return tokens

    def __call__(self, text: str) -> tuple[list[str], np.ndarray]:
        # Every per-token step below is a C-level loop (split, dict.fromkeys, map); Python runs
        # once per distinct chunk of the file.
        chunks = text.split()  # whitespace-free runs, cut exactly where spaCy cuts
        distinct = list(dict.fromkeys(chunks))
        number = dict(zip(distinct, range(len(distinct))))
        chunk_ids = np.fromiter(map(number.__getitem__, chunks), np.int64, len(chunks))  # (n_chunks,)
        token_lists = [self.chunk_tokens(chunk) for chunk in distinct]
        lengths = np.fromiter(map(len, token_lists), np.int64, len(token_lists))  # (n_distinct,)
        flat_words = list(itertools.chain.from_iterable(token_lists))  # every distinct chunk's tokens
        words = list(dict.fromkeys(flat_words))
        word_ids = dict(zip(words, range(len(words))))
        flat = np.fromiter(map(word_ids.__getitem__, flat_words), np.int32, len(flat_words))
        return words, _expand(chunk_ids, lengths, flat)


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
    text = document.text.lower() if lowercase else document.text
    result.words, result.index = _tokenizer(text)
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
