"""Finding corpus files, reading them as text, stripping Gutenberg boilerplate, choosing val documents."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from pipeline.corpus import (MAX_CHUNK_CHARS, check_chunk_lengths, choose_val_documents, decode_text,
                             find_corpus_files, read_document, strip_gutenberg)
from pipeline.errors import UserError

BODY = "ACT I. SCENE I.\nEnter two Gentlemen.\n\nFIRST GENTLEMAN.\nYou do not meet a man but frowns.\n"


def write(path, text: str | bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


# --- finding files ---------------------------------------------------------------------------

def test_directories_expand_to_sorted_txt_files_recursively(tmp_path):
    for name in ("b.txt", "a.txt", "sub/c.txt", "notes.md", "sub/deeper/d.txt"):
        write(tmp_path / "corpus" / name, "text")
    found = find_corpus_files([tmp_path / "corpus"])
    assert [p.relative_to(tmp_path / "corpus").as_posix() for p in found] == \
        ["a.txt", "b.txt", "sub/c.txt", "sub/deeper/d.txt"]


def test_mix_of_files_and_directories_keeps_given_order_and_drops_duplicates(tmp_path):
    extra = write(tmp_path / "extra.text", "any extension is fine when named")
    write(tmp_path / "dir/x.txt", "x")
    write(tmp_path / "dir/y.txt", "y")
    found = find_corpus_files([extra, tmp_path / "dir", tmp_path / "dir/x.txt"])
    assert [p.name for p in found] == ["extra.text", "x.txt", "y.txt"]


def test_missing_path_is_an_error_naming_it(tmp_path):
    with pytest.raises(UserError, match=r"nope\.txt: no such file or directory"):
        find_corpus_files([tmp_path / "nope.txt"])


def test_directory_without_txt_files_is_an_error(tmp_path):
    write(tmp_path / "empty/readme.md", "not a corpus")
    with pytest.raises(UserError, match=r"empty: directory has no \.txt files"):
        find_corpus_files([tmp_path / "empty"])


# --- decoding and skipping -------------------------------------------------------------------

def test_read_document_records_hash_size_and_drops_bom(tmp_path):
    data = b"\xef\xbb\xbf" + BODY.encode("utf-8")
    doc = read_document(write(tmp_path / "a.txt", data))
    assert doc.sha256 == hashlib.sha256(data).hexdigest()
    assert doc.n_bytes == len(data)
    assert doc.text == BODY and doc.skipped is None


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"  \n\t\n", "empty"),
    ("\ufeff\u00a0\u3000\n".encode("utf-8"), "empty"),
    (b"PK\x03\x04\x00\x00binary", "binary"),
    ("utf-16 text".encode("utf-16"), "binary"),
    (b"caf\xe9 latin-1", "not UTF-8 text (invalid byte at offset 3)"),
])
def test_unusable_files_are_skipped_with_a_reason(tmp_path, data, reason):
    doc = read_document(write(tmp_path / "bad.txt", data))
    assert doc.text is None
    assert doc.skipped.startswith(reason)
    assert decode_text(data) == (None, doc.skipped)


def test_gutenberg_only_file_is_skipped(tmp_path):
    text = "*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\n\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\n"
    assert read_document(write(tmp_path / "a.txt", text)).skipped.startswith("empty after removing")


def test_a_file_without_line_breaks_is_read_whole(tmp_path):
    text = "To be, or not to be: that is the question. " * 30_000  # 1.3M characters, one line
    assert len(text) > MAX_CHUNK_CHARS and "\n" not in text
    assert read_document(write(tmp_path / "one_line.txt", text)).text == text


def test_overlong_run_without_whitespace_is_an_error_naming_file_offset_and_size(tmp_path):
    path = write(tmp_path / "data.txt", "some prose\n" + "Qk" * (MAX_CHUNK_CHARS // 2) + "x\nmore prose\n")
    with pytest.raises(UserError, match=r"data\.txt: 1,000,001 characters without whitespace at character 11, "
                                        r"over the 1,000,000-character limit.*leave the file out") as error:
        read_document(path)
    assert "\n" not in str(error.value)


def reference_runs(text: str) -> list[tuple[int, int]]:
    """(start, length) of every whitespace-free run, in order, by a plain character loop."""
    runs, start = [], None
    for i, char in enumerate(text + " "):
        if char.isspace() and start is not None:
            runs.append((start, i - start))
            start = None
        elif not char.isspace() and start is None:
            start = i
    return runs


@pytest.mark.parametrize("text", [
    "a" * 10 + "\n" + "b" * 10,  # runs exactly at the limit are fine
    "a" * 11,
    "ab cd\u00a0" + "e" * 11 + "\u3000fg",  # no-break and ideographic spaces separate runs, as in str.split
    "x " * 20 + "y" * 9 + "\u2028" + "z" * 12,
    "w" * 9 + " " + "v" * 10 + "\t" + "u" * 13 + " " + "t" * 11,  # the first over-limit run is named
])
def test_chunk_check_finds_the_first_run_over_the_limit(text):
    limit = 10
    over = [run for run in reference_runs(text) if run[1] > limit]
    if not over:
        check_chunk_lengths(text, "f", limit=limit)
        return
    start, length = over[0]
    with pytest.raises(UserError, match=rf"^f: {length} characters without whitespace at character {start}, "
                                        rf"over the {limit}-character limit"):
        check_chunk_lengths(text, "f", limit=limit)


# --- Project Gutenberg boilerplate -----------------------------------------------------------

HEADERS = [
    "The Project Gutenberg EBook of Hamlet\n\nRelease Date: 1998\n\n*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n",
    "Title: Hamlet\n\n*** START OF THE PROJECT GUTENBERG EBOOK 1524 ***\n",
    "Title: Hamlet\r\n***START OF THE PROJECT GUTENBERG EBOOK HAMLET***\r\n",
    "The Project Gutenberg Etext of Hamlet\nSMALL PRINT! ...\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n",
]
FOOTERS = [
    "End of the Project Gutenberg EBook of Hamlet\n\n*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nlicense...",
    "*** END OF THE PROJECT GUTENBERG EBOOK 1524 ***\n\nSection 1. General Terms of Use\n",
    "End of Project Gutenberg's Hamlet, by William Shakespeare\n",
    "***END OF THE PROJECT GUTENBERG EBOOK HAMLET***",
]


@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize("footer", FOOTERS)
def test_gutenberg_header_and_footer_are_removed(header, footer):
    assert strip_gutenberg(header + BODY + footer) == BODY


def test_text_without_markers_is_unchanged():
    text = "I will end of my days here.\n*** a line of stars ***\nThe Project Gutenberg is mentioned.\n"
    assert strip_gutenberg(text) == text


def test_only_a_footer_or_only_a_header():
    assert strip_gutenberg(BODY + FOOTERS[0]) == BODY
    assert strip_gutenberg(HEADERS[1] + BODY) == BODY


def test_markers_must_start_a_line():
    text = "He said: *** START OF THE PROJECT GUTENBERG EBOOK *** and left.\n" + BODY
    assert strip_gutenberg(text) == text


# --- validation split ------------------------------------------------------------------------

def reference_val_mask(counts, fraction, seed):
    """Plain restatement of the rule: seeded order, take until the fraction is reached, keep one for train."""
    counts = list(counts)
    mask = [False] * len(counts)
    if fraction <= 0 or len(counts) < 2:
        return mask
    order = np.random.default_rng(seed).permutation(len(counts)).tolist()
    for taken, doc in enumerate(order):
        if sum(c for c, m in zip(counts, mask) if m) >= fraction * sum(counts) or taken == len(counts) - 1:
            break
        mask[doc] = True
    return mask


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.3, 0.99])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_val_documents_follow_the_rule(fraction, seed):
    counts = np.random.default_rng(100 + seed).integers(1, 1000, size=20)
    mask = choose_val_documents(counts, fraction, seed)
    assert mask.tolist() == reference_val_mask(counts, fraction, seed)
    assert (~mask).sum() >= 1  # train is never empty
    if 0 < fraction < 0.9:
        assert counts[mask].sum() >= fraction * counts.sum()


def test_val_choice_is_deterministic_and_depends_on_seed():
    counts = [100] * 40
    picks = {tuple(np.flatnonzero(choose_val_documents(counts, 0.1, seed))) for seed in range(5)}
    assert len(picks) > 1
    assert (choose_val_documents(counts, 0.1, 3) == choose_val_documents(counts, 0.1, 3)).all()


def test_single_document_stays_in_train():
    assert choose_val_documents([500], 0.5, 0).tolist() == [False]
