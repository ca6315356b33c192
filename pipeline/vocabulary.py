"""The frequency vocabulary: which words get their own id, and the id of every token.

Ids: `<unk>` = 0 and `<eod>` = 1 (token_store.SPECIAL_TOKENS), then words by descending frequency,
ties broken by the word's string order (Python's code-point order), clipped so the vocabulary has
at most `vocab_size` ids in total. Every other word maps to `<unk>`.

Frequencies are counted on the *training split only*: a word seen only in held-out documents gets
no id, exactly as a word never seen at all, so validation perplexity is not flattered by a
vocabulary that peeked at it. A token spelled like a special token (spaCy's English tokenizer
splits "<unk>" anyway) is treated as unknown rather than aliasing the special id.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.token_store import SPECIAL_TOKENS, UNK

UNK_ID = SPECIAL_TOKENS.index(UNK)


class WordCounts:
    """Corpus-wide word numbering (first-appearance order) and training-split frequencies."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self.words: list[str] = []
        self._counts = np.zeros(1024, dtype=np.int64)

    def intern(self, words: Sequence[str]) -> np.ndarray:
        """Global ids (int64) for a file's distinct words, numbering new words as they come."""
        ids = self._ids
        new = [word for word in words if word not in ids]  # a file's words are distinct already
        ids.update(zip(new, range(len(self.words), len(self.words) + len(new))))
        self.words.extend(new)
        if len(self.words) > self._counts.size:
            self._counts = np.concatenate([self._counts, np.zeros(len(self.words) + self._counts.size, np.int64)])
        return np.fromiter(map(ids.__getitem__, words), dtype=np.int64, count=len(words))

    def count(self, global_ids: np.ndarray, index: np.ndarray) -> None:
        """Add one file's tokens: `index` (n_tokens,) points into `global_ids` (n_distinct,)."""
        # global_ids holds distinct ids, so the fancy-indexed += adds each file word exactly once.
        self._counts[global_ids] += np.bincount(index, minlength=global_ids.size)

    @property
    def counts(self) -> np.ndarray:
        """(len(words),) int64 training-split occurrences of each word."""
        return self._counts[: len(self.words)]


def build_vocabulary(words: Sequence[str], counts: Sequence[int], vocab_size: int) -> list[str]:
    """Special tokens, then the most frequent counted words (ties by string), `vocab_size` ids at most."""
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size must be at least {len(SPECIAL_TOKENS) + 1}, got {vocab_size}")
    counts = list(map(int, counts))
    specials = set(SPECIAL_TOKENS)
    candidates = [i for i, n in enumerate(counts) if n > 0 and words[i] not in specials]
    candidates.sort(key=lambda i: (-counts[i], words[i]))
    kept = candidates[: vocab_size - len(SPECIAL_TOKENS)]
    return list(SPECIAL_TOKENS) + [words[i] for i in kept]


def id_table(vocab: Sequence[str], words: Sequence[str]) -> np.ndarray:
    """(len(words),) int64: the vocabulary id of each numbered word, `<unk>` for pruned words."""
    vocab_ids = {word: i for i, word in enumerate(vocab) if i >= len(SPECIAL_TOKENS)}
    return np.fromiter((vocab_ids.get(word, UNK_ID) for word in words), dtype=np.int64, count=len(words))
