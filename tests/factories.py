"""Small real artifacts for tests: the fixture corpus, token stores cut from it, tiny configs."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import spacy

from pipeline.token_store import SPECIAL_TOKENS, TokenStoreMeta, write_token_store

# Nine public-domain books, one document per .txt file, shipped in the repository
# (provenance and how to regenerate: tests/fixtures/README.md).
FIXTURE_CORPUS = Path(__file__).resolve().parent / "fixtures" / "kjv"

TINY_MODEL = {"n_layer": 1, "n_head": 2, "d_model": 32, "d_ff": 64, "context": 16, "dropout": 0.1}
TINY_TRAIN = {"batch_size": 4, "lr": 1e-3, "shuffle_block_tokens": 256, "eval_max_tokens": 512,
              "eval_batch_size": 16}


def corpus_files(count: int) -> list[Path]:
    """The first `count` documents of the fixture corpus, in name order."""
    return sorted(FIXTURE_CORPUS.glob("*.txt"))[:count]


def micro_token_store(location: str, n_chars: int = 40_000, vocab_size: int = 300) -> str:
    """A token store from the first characters of two fixture documents (one per split), tokenized by spaCy."""
    tokenizer = spacy.blank("en").tokenizer
    docs = []
    for path in corpus_files(2):
        text = path.read_text(encoding="utf-8")[:n_chars].lower()
        docs.append([t.text for line in text.splitlines() for t in tokenizer(line) if not t.is_space])
    counts = collections.Counter(docs[0])
    words = sorted(counts, key=lambda w: (-counts[w], w))[: vocab_size - len(SPECIAL_TOKENS)]
    vocab = list(SPECIAL_TOKENS) + words
    index = {w: i for i, w in enumerate(vocab)}
    ids = lambda doc: np.array([index.get(w, 0) for w in doc] + [1])
    meta = TokenStoreMeta(vocab_size=len(vocab), dtype="", tokenizer={"test": "micro"}, counts={}, manifest=[])
    write_token_store(location, {"train": ids(docs[0]), "val": ids(docs[1])}, vocab, meta)
    return location


def overrides(model: dict | None = None, train: dict | None = None) -> dict:
    return {"model": {**TINY_MODEL, **(model or {})}, "train": {**TINY_TRAIN, **(train or {})}}


def tiny_teacher(root: Path, n_chars: int = 15_000, steps: int = 10) -> tuple[str, str]:
    """(token store, teacher run directory): a tiny teacher trained `steps` steps on a micro token store."""
    from stages.train_teacher import TrainTeacherConfig, run as train_teacher

    tokens = micro_token_store(str(root / "tokens"), n_chars=n_chars)
    train_teacher(TrainTeacherConfig(tokens=tokens, out=str(root / "teacher"), preset="tiny-teacher",
                                     overrides=overrides(train={"epochs": 1, "max_steps_per_epoch": steps})))
    return tokens, str(root / "teacher")
