"""Tokenization agrees with spaCy's own tokenizer, and workers never change the result."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import spacy

from pipeline.errors import UserError
from pipeline.tokenizer import (PIECE_CHARS, ChunkTokenizer, _expand, _WHITESPACE, tokenize_file, tokenize_files,
                                whitespace_pieces)

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


def test_matches_spacy_on_a_whole_book(fixture_corpus):
    text = (fixture_corpus / "acts.txt").read_text(encoding="utf-8").lower()
    expected = spacy_tokens(text)
    assert len(expected) > 20_000  # the fixture's longest book (~28k tokens), not a snippet
    assert ours(text) == expected


def test_memo_restart_changes_nothing():
    text = SAMPLE * 2  # ~110 distinct chunks in pieces of ~30: the memo (40 chunks) starts afresh often
    tokenizer = ChunkTokenizer(memo_chunks=40, piece_chars=150)
    restarts = []
    original_restart = tokenizer._restart
    tokenizer._restart = lambda: (restarts.append(1), original_restart())
    words, index = tokenizer(text)
    assert len(restarts) >= 2
    assert [words[i] for i in index.tolist()] == spacy_tokens(text)


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


# --- pieces: a text is tokenized a bounded piece at a time --------------------------------------

def previous_implementation(text: str) -> tuple[list[str], list[int]]:
    """ChunkTokenizer.__call__ as it was before pieces (whole text in one pass), memo replaced by a dict."""
    spacy_tokenizer, memo = spacy.blank("en").tokenizer, {}
    chunks = text.split()
    distinct = list(dict.fromkeys(chunks))
    number = dict(zip(distinct, range(len(distinct))))
    chunk_ids = np.fromiter(map(number.__getitem__, chunks), np.int64, len(chunks))
    token_lists = [memo.setdefault(c, tuple(t.text for t in spacy_tokenizer(c))) for c in distinct]
    lengths = np.fromiter(map(len, token_lists), np.int64, len(token_lists))
    flat_words = list(itertools.chain.from_iterable(token_lists))
    words = list(dict.fromkeys(flat_words))
    word_ids = dict(zip(words, range(len(words))))
    flat = np.fromiter(map(word_ids.__getitem__, flat_words), np.int32, len(flat_words))
    return words, _expand(chunk_ids, lengths, flat).tolist()


GREEK = "ΟΔΥΣΣΕΥΣ ΚΑΙ ΑΧΙΛΛΕΥΣ. ΣΟΦΟΣ ΛΟΓΟΣ; ΟΣ, ΣΣ ΣΑΣ\u00a0ΣΟΣ\u3000ΙΣ.Σ "  # final sigma depends on context


def varied_text(seed: int, n_chunks: int) -> str:
    """SAMPLE's and GREEK's chunks in random order and case, joined by random (also Unicode) whitespace."""
    rng = np.random.default_rng(seed)
    chunks = (SAMPLE + GREEK).split()
    spaces = [" ", " ", " ", "\n", "\t", "  ", "\r\n", "\u00a0", "\u2028", "\u3000", "\n\n"]
    parts = []
    for chunk in rng.choice(chunks, n_chunks).tolist():
        parts.append(chunk.upper() if rng.random() < 0.2 else chunk)
        parts.append(spaces[rng.integers(len(spaces))])
    return ("" if rng.random() < 0.5 else " ") + "".join(parts)


@pytest.mark.parametrize("seed", range(6))
def test_pieces_give_the_previous_whole_text_result(seed):
    text = varied_text(seed, 400)
    sizes = np.random.default_rng(seed).integers(1, 300, size=4).tolist() + [len(text) - 1, PIECE_CHARS]
    for lowercase in (False, True):
        expected = previous_implementation(text.lower() if lowercase else text)
        tokenizer = ChunkTokenizer()
        for size in sizes:
            tokenizer.piece_chars = size
            words, index = tokenizer(text, lowercase)
            assert (words, index.tolist()) == expected, (size, lowercase)


@pytest.mark.parametrize("seed", range(4))
def test_whitespace_pieces_cut_only_before_whitespace(seed):
    text = varied_text(seed, 200) + "z" * 50 + " end"
    longest = max(map(len, text.split()))
    for size in np.random.default_rng(seed).integers(1, 120, size=5).tolist():
        pieces = list(whitespace_pieces(text, size))
        assert "".join(pieces) == text
        assert [chunk for piece in pieces for chunk in piece.split()] == text.split()
        assert all(piece[0].isspace() for piece in pieces[1:])
        assert all(size <= len(piece) <= size + longest for piece in pieces[:-1])
    assert list(whitespace_pieces(text, len(text))) == [text] and list(whitespace_pieces("", 5)) == []


def test_regex_whitespace_and_lowercase_agree_with_str_split_everywhere():
    # The basis of cutting pieces and lowercasing them one by one, over every code point: the
    # regex's \s is str.isspace (where str.split cuts), lowercasing keeps whitespace and makes none.
    for char in map(chr, range(0x110000)):
        lower = char.lower()
        if char.isspace():
            assert _WHITESPACE.match(char) and lower == char, hex(ord(char))
        else:
            assert not _WHITESPACE.match(char) and not any(map(str.isspace, lower)), hex(ord(char))


def sentences(rng: np.random.Generator, n: int) -> list[str]:
    """n varied sentences of ordinary words."""
    words = re.findall(r"[A-Za-z']+", SAMPLE)
    marks = [".", ",", ";", "!", "?", ":", "..."]
    return [" ".join(rng.choice(words, rng.integers(3, 15)).tolist()).capitalize() + marks[rng.integers(len(marks))]
            for _ in range(n)]


def test_a_file_of_megabytes_without_line_breaks_tokenizes_like_the_same_text_in_lines(tmp_path):
    lines = sentences(np.random.default_rng(0), 2_000)
    lines *= -(-int(1.1 * PIECE_CHARS) // len(" ".join(lines)))  # just over one piece: two or more pieces
    (tmp_path / "one_line.txt").write_text(" ".join(lines), encoding="utf-8")
    (tmp_path / "lines.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    one_line, in_lines = tokenize_file(tmp_path / "one_line.txt"), tokenize_file(tmp_path / "lines.txt")
    assert len(list(whitespace_pieces(" ".join(lines), PIECE_CHARS))) >= 2
    assert one_line.n_tokens > 400_000
    assert one_line.words == in_lines.words and np.array_equal(one_line.index, in_lines.index)
    assert (one_line.words, one_line.index.tolist()) == previous_implementation(" ".join(lines).lower())


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
    huge.write_text("prose " + "y" * 1_000_001, encoding="utf-8")
    with pytest.raises(UserError, match=r"huge\.txt: 1,000,001 characters without whitespace at character 6,"):
        list(tokenize_files(small_files[:2] + [huge] + small_files[2:], workers=2))
