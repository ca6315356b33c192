"""Tokenization agrees with spaCy's own tokenizer, and workers never change the result."""

from __future__ import annotations

import numpy as np
import pytest
import spacy

from pipeline.errors import UserError
from pipeline.tokenizer import ChunkTokenizer, _expand, tokenize_file, tokenize_files

SAMPLE = (
    "HAMLET. To be, or not to be: that is the question!  I don't know; can't you? We'll see...\n"
    "\tMrs. O'Neil paid $3.50 (tax incl.) on 12/25/2024 -- e-mail jo@ex.com or see https://ex.org/a?b=1.\n"
    "U.S.A. vs. U.K.: 10km, 5.5kg, 3rd & 4th; \"quoted\" 'single' rock'n'roll :) :-( <3 ... etc.\r\n"
    "Naïve café — “curly quotes” … ‘tis o'er; 'twas well-known, ne'er-do-well's #hash @user\n"
    "\n   \n"
    "SCENE II.\u00a0A hall\u2028in the castle.\u3000Enter KING CLAUDIUS, QUEEN GERTRUDE, Hamlet's friends.\n"
    "What's that?—It's nothing! A dog's life... Isn't it? Y'all ain't gonna.\n"
)


def spacy_tokens(text: str) -> list[str]:
    """The reference: spaCy's blank English tokenizer on the whole text, whitespace tokens dropped."""
    return [token.text for token in spacy.blank("en").tokenizer(text) if not token.is_space]


def ours(text: str, **kwargs) -> list[str]:
    words, index = ChunkTokenizer(**kwargs)(text)
    assert index.dtype == np.int32 and len(set(words)) == len(words)
    return [words[i] for i in index.tolist()]


@pytest.mark.parametrize("lower", [False, True])
def test_matches_spacy_on_sample_text(lower):
    text = SAMPLE.lower() if lower else SAMPLE
    assert ours(text) == spacy_tokens(text)


def test_matches_spacy_on_a_real_play(shakespeare_dir):
    text = (shakespeare_dir / "hamlet.txt").read_text(encoding="utf-8").lower()
    expected = spacy_tokens(text)
    assert len(expected) > 30_000
    assert ours(text) == expected


def test_memo_restart_changes_nothing():
    text = SAMPLE * 2  # ~110 distinct chunks: the memo starts afresh twice
    assert ours(text, memo_chunks=40) == spacy_tokens(text)


def test_tokens_do_not_depend_on_neighbouring_chunks():
    # Whole-text spaCy lets a bogus special-case match across the space suppress "''" (documented
    # in pipeline/tokenizer.py); chunk by chunk gives spaCy's answer for each chunk alone.
    assert spacy_tokens("x' ''tis") == ["x", "'", "'", "'", "tis"]
    assert ours("x' ''tis") == spacy_tokens("x'") + spacy_tokens("''tis") == ["x", "'", "''", "tis"]


def test_empty_and_whitespace_text():
    assert ours("") == [] and ours(" \n\t \r\n") == []


def test_expand_matches_plain_loop():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 4, size=30)
    flat = rng.integers(0, 50, size=int(lengths.sum())).astype(np.int32)
    chunk_ids = rng.integers(0, 30, size=200)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    expected = [int(flat[starts[c] + k]) for c in chunk_ids for k in range(lengths[c])]
    assert _expand(chunk_ids, lengths, flat).tolist() == expected


def test_tokenize_file_lowercases_unless_asked_not_to(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("The KING'S men. CAN'T\n", encoding="utf-8")
    assert tokenize_file(path).tokens() == spacy_tokens("the king's men. can't\n")
    assert tokenize_file(path, lowercase=False).tokens() == spacy_tokens("The KING'S men. CAN'T\n")


def test_skipped_file_has_no_tokens(tmp_path):
    path = tmp_path / "b.txt"
    path.write_bytes(b"\x00\x01\x02")
    result = tokenize_file(path)
    assert result.skipped.startswith("binary") and result.n_tokens == 0 and result.n_bytes == 3


@pytest.fixture
def small_files(tmp_path):
    paths = []
    for i in range(7):
        path = tmp_path / f"doc{i}.txt"
        path.write_text(SAMPLE[i * 40:] + f" document {i}\n" * (i + 1), encoding="utf-8")
        paths.append(path)
    (tmp_path / "doc7.txt").write_bytes(b"")
    return paths + [tmp_path / "doc7.txt"]


def as_tuples(results):
    return [(r.path, r.sha256, r.skipped, r.tokens()) for r in results]


def test_worker_count_does_not_change_results(small_files):
    one = as_tuples(tokenize_files(small_files, workers=1))
    assert [r[0] for r in one] == [str(p) for p in small_files]  # input order
    assert one[0][3] == spacy_tokens((SAMPLE + " document 0\n").lower())
    assert as_tuples(tokenize_files(small_files, workers=2)) == one
    assert as_tuples(tokenize_files(small_files, workers=3)) == one


def test_spawned_workers_give_the_same_results(small_files):
    # Spawn-safety: a fresh interpreter per worker (slow: each imports spaCy), same output.
    one = as_tuples(tokenize_files(small_files[:3], workers=1))
    assert as_tuples(tokenize_files(small_files[:3], workers=2, start_method="spawn")) == one


def test_error_in_a_worker_reaches_the_caller(small_files, tmp_path):
    huge = tmp_path / "huge.txt"
    huge.write_text("y" * 1_000_001, encoding="utf-8")
    with pytest.raises(UserError, match=r"huge\.txt: line 1 is 1,000,001 characters"):
        list(tokenize_files(small_files[:2] + [huge] + small_files[2:], workers=2))
