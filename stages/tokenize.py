"""Stage `tokenize`: text files -> token store (ids, vocabulary, provenance).

Files are tokenized in parallel (pipeline.tokenizer), documents are split into train/val
(pipeline.corpus), the vocabulary is counted on train (pipeline.vocabulary), and the store is
written atomically (pipeline.token_store). Nothing in the output depends on the worker count.

Counts recorded in the store: `train_tokens`/`val_tokens` are the lengths of the id arrays (word
tokens plus one `<eod>` per document); `unk_tokens` counts `<unk>` ids over both splits;
`distinct_words` is the number of distinct words seen in train (the vocabulary's candidates).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.corpus import MAX_CHUNK_CHARS, choose_val_documents, find_corpus_files
from pipeline.errors import UserError
from pipeline.storage import TOKENS, check_apart, check_writable
from pipeline.token_store import (EOD, SPECIAL_TOKENS, TokenStore, TokenStoreMeta, smallest_uint_dtype,
                                  write_token_store)
from pipeline.tokenizer import LANGUAGE, FileTokens, default_workers, spacy_version, tokenize_files
from pipeline.vocabulary import UNK_ID, WordCounts, build_vocabulary, id_table

EOD_ID = SPECIAL_TOKENS.index(EOD)


@dataclass
class TokenizeConfig:
    """Options of `pipeline tokenize`."""

    corpus: list[str]
    """Input .txt files and directories (searched recursively for *.txt, sorted)."""
    out: str
    """Where the token store goes: a local directory or an fsspec URL."""
    vocab_size: int = 50000
    """Ids in total, the two special tokens included (the paper's 50k)."""
    val_fraction: float = 0.05
    """Share of tokens held out for validation, as whole documents drawn in a seeded order."""
    seed: int = 0
    """Seeds which documents are held out."""
    lowercase: bool = True
    """Lowercase the text before tokenizing."""
    workers: int = field(default_factory=default_workers)
    """Tokenizer processes; 1 tokenizes in this process."""
    force: bool = False
    """Replace an existing store at `out`."""
    progress: bool = True
    """Show a progress bar on stderr (only when it is a terminal)."""

    def __post_init__(self) -> None:
        self.corpus = [str(path) for path in self.corpus]
        if self.vocab_size < len(SPECIAL_TOKENS) + 1:
            raise UserError(f"--vocab-size {self.vocab_size}: must be at least {len(SPECIAL_TOKENS) + 1} "
                            f"({len(SPECIAL_TOKENS)} special tokens and one word)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"--val-fraction {self.val_fraction}: must be in [0, 1); 0 holds nothing out")
        if self.workers < 1:
            raise UserError(f"--workers {self.workers}: must be at least 1")


@dataclass
class _Document:
    """A used file after interning."""

    global_ids: np.ndarray
    """(n_distinct,) int64 corpus-wide ids (WordCounts numbering) of the file's distinct words."""
    index: np.ndarray
    """(n_tokens,) int32 position of each token's word in `global_ids`."""


def run(config: TokenizeConfig) -> TokenStore:
    """Tokenize the corpus and write the token store; returns it opened."""
    check_apart(config.out, [("CORPUS", path) for path in config.corpus])
    check_writable(config.out, config.force, kinds=(TOKENS,))  # fail before minutes of work, not after
    paths = find_corpus_files(config.corpus)
    words, documents, manifest = _tokenize(paths, config)
    is_val = choose_val_documents([doc.index.size for doc in documents], config.val_fraction, config.seed).tolist()
    for doc, val in zip(documents, is_val):
        if not val:
            words.count(doc.global_ids, doc.index)
    vocab = build_vocabulary(words.words, words.counts, config.vocab_size)
    table = id_table(vocab, words.words).astype(smallest_uint_dtype(len(vocab)))
    splits = {"train": _encode([doc for doc, val in zip(documents, is_val) if not val], table),
              "val": _encode([doc for doc, val in zip(documents, is_val) if val], table)}
    for entry, val in zip((e for e in manifest if "skipped" not in e), is_val):
        entry["split"] = "val" if val else "train"
    meta = TokenStoreMeta(vocab_size=len(vocab), dtype="", tokenizer=_tokenizer_meta(config),
                          counts=_counts(splits, is_val, words, manifest), manifest=manifest)
    return write_token_store(config.out, splits, vocab, meta, force=config.force)


def _tokenize(paths, config: TokenizeConfig) -> tuple[WordCounts, list[_Document], list[dict[str, Any]]]:
    """Tokenize every file (progress on stderr), interning words as results arrive."""
    words, documents, manifest = WordCounts(), [], []
    started, n_tokens = time.perf_counter(), 0
    bar = tqdm(total=len(paths), unit="file", desc="tokenize", file=sys.stderr,
               disable=None if config.progress else True)
    with bar:
        for result in tokenize_files(paths, config.lowercase, config.workers):
            manifest.append(_manifest_entry(result))
            if result.skipped is None:
                documents.append(_Document(words.intern(result.words), result.index))
                n_tokens += result.n_tokens
            bar.update()
            bar.set_postfix_str(f"{n_tokens / (time.perf_counter() - started):,.0f} tok/s", refresh=False)
    if not documents:
        reasons = "; ".join(f"{e['path']}: {e['skipped']}" for e in manifest[:5])
        raise UserError(f"CORPUS has no usable text: all {len(manifest)} files were skipped ({reasons}); "
                        f"give UTF-8 text files")
    return words, documents, manifest


def _manifest_entry(result: FileTokens) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": result.path, "sha256": result.sha256, "bytes": result.n_bytes}
    if result.skipped is not None:
        entry["skipped"] = result.skipped
    else:
        entry["tokens"] = result.n_tokens
    return entry


def _encode(documents: list[_Document], table: np.ndarray) -> np.ndarray:
    """Documents as vocabulary ids, each followed by `<eod>`: (n_tokens + n_docs,) of table's dtype.

    Filled in place: peak memory is the split itself at 2-4 bytes a token, not int64 copies.
    """
    ids = np.empty(sum(doc.index.size + 1 for doc in documents), dtype=table.dtype)
    start = 0
    for doc in documents:
        end = start + doc.index.size
        ids[start:end] = table[doc.global_ids][doc.index]
        ids[end] = EOD_ID
        start = end + 1
    return ids


def _tokenizer_meta(config: TokenizeConfig) -> dict[str, Any]:
    return {"library": "spacy", "spacy_version": spacy_version(), "language": LANGUAGE,
            "method": "spacy.blank(language).tokenizer on each whitespace-free chunk; whitespace dropped",
            "lowercase": config.lowercase, "vocab_size": config.vocab_size, "vocab_counted_on": "train",
            "val_fraction": config.val_fraction, "seed": config.seed, "split_unit": "document",
            "gutenberg_stripped": True, "max_chunk_chars": MAX_CHUNK_CHARS}


def _counts(splits: dict[str, np.ndarray], is_val: list[bool], words: WordCounts,
            manifest: list[dict[str, Any]]) -> dict[str, int]:
    return {"train_tokens": int(splits["train"].size), "val_tokens": int(splits["val"].size),
            "train_documents": is_val.count(False), "val_documents": is_val.count(True),
            "unk_tokens": int(sum((ids == UNK_ID).sum() for ids in splits.values())),
            "distinct_words": int((words.counts > 0).sum()),
            "skipped_files": sum(1 for e in manifest if "skipped" in e)}
