"""The frequency vocabulary against a plain Counter-based restatement of its rule."""

from __future__ import annotations

import collections
import random

import numpy as np
import pytest

from pipeline.token_store import SPECIAL_TOKENS
from pipeline.vocabulary import UNK_ID, WordCounts, build_vocabulary, id_table


def reference_vocabulary(train_tokens: list[str], vocab_size: int) -> list[str]:
    counts = collections.Counter(t for t in train_tokens if t not in SPECIAL_TOKENS)
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    return list(SPECIAL_TOKENS) + ranked[: vocab_size - len(SPECIAL_TOKENS)]


def random_files(seed: int, n_files: int = 6) -> list[list[str]]:
    """Token lists drawn from a skewed distribution so that many counts tie."""
    rng = random.Random(seed)
    alphabet = [f"w{i}" for i in range(60)] + ["Zed", "apple", "Apple", "é", "<eod>"]
    return [[rng.choice(alphabet[: rng.randint(5, len(alphabet))]) for _ in range(rng.randint(0, 300))]
            for _ in range(n_files)]


def interned(tokens: list[str]) -> tuple[list[str], np.ndarray]:
    words = list(dict.fromkeys(tokens))
    return words, np.array([words.index(t) for t in tokens], dtype=np.int32)


def count_train(files: list[list[str]], train: list[bool]) -> tuple[WordCounts, list[np.ndarray]]:
    counter, global_ids = WordCounts(), []
    for tokens in files:  # every file is interned; only train files are counted
        words, index = interned(tokens)
        global_ids.append((counter.intern(words), index))
    for (ids, index), is_train in zip(global_ids, train):
        if is_train:
            counter.count(ids, index)
    return counter, global_ids


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("vocab_size", [3, 10, 40, 10_000])
def test_vocabulary_matches_reference(seed, vocab_size):
    files = random_files(seed)
    train = [i % 3 != 0 for i in range(len(files))]
    counter, _ = count_train(files, train)
    train_tokens = [t for tokens, keep in zip(files, train) if keep for t in tokens]
    vocab = build_vocabulary(counter.words, counter.counts, vocab_size)
    assert vocab == reference_vocabulary(train_tokens, vocab_size)
    assert len(vocab) <= vocab_size and len(set(vocab)) == len(vocab)


def test_counts_are_train_only_and_exact():
    files = random_files(9)
    train = [True, False, True, False, True, True]
    counter, _ = count_train(files, train)
    expected = collections.Counter(t for tokens, keep in zip(files, train) if keep for t in tokens)
    got = {w: int(n) for w, n in zip(counter.words, counter.counts) if n}
    assert got == dict(expected)
    assert set(counter.words) == {t for tokens in files for t in tokens}  # val words are numbered too


def test_ties_break_by_string_order_and_val_only_words_get_no_id():
    counter = WordCounts()
    counter.count(counter.intern(["b", "a", "c"]), np.array([0, 1, 2, 0, 1, 2, 2], np.int32))
    counter.intern(["only_in_val"])
    assert build_vocabulary(counter.words, counter.counts, 100) == ["<unk>", "<eod>", "c", "a", "b"]


def test_special_token_strings_never_alias_special_ids():
    counter = WordCounts()
    counter.count(counter.intern(["<eod>", "x"]), np.array([0, 0, 0, 1], np.int32))
    vocab = build_vocabulary(counter.words, counter.counts, 10)
    assert vocab == ["<unk>", "<eod>", "x"]
    assert id_table(vocab, counter.words).tolist() == [UNK_ID, 2]


@pytest.mark.parametrize("vocab_size", [3, 12, 1000])
def test_ids_map_pruned_words_to_unk(vocab_size):
    files = random_files(5)
    counter, global_ids = count_train(files, [True] * len(files))
    vocab = build_vocabulary(counter.words, counter.counts, vocab_size)
    table = id_table(vocab, counter.words)
    lookup = {w: i for i, w in enumerate(vocab) if w not in SPECIAL_TOKENS}
    for tokens, (ids, index) in zip(files, global_ids):
        assert table[ids][index].tolist() == [lookup.get(t, UNK_ID) for t in tokens]


def test_vocabulary_needs_room_for_a_word():
    with pytest.raises(ValueError, match="at least 3"):
        build_vocabulary(["a"], [1], 2)


def test_counts_grow_past_initial_capacity():
    counter = WordCounts()
    words = [f"w{i}" for i in range(5000)]
    ids = counter.intern(words)
    counter.count(ids, np.arange(5000, dtype=np.int32))
    assert counter.counts.shape == (5000,) and (counter.counts == 1).all()
    assert counter.intern(["w42", "new"]).tolist() == [42, 5000]
