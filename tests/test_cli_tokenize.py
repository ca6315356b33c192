"""`pipeline tokenize` and `pipeline inspect` through click: exit codes, messages, real stores on disk."""

from __future__ import annotations

import collections
import os
import re
from pathlib import Path

import numpy as np
import pytest
import spacy
import zarr
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.token_store import SPECIAL_TOKENS, TokenStore

GUTENBERG_HEAD = "The Project Gutenberg EBook of X\n\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n"
GUTENBERG_FOOT = "\nEnd of the Project Gutenberg EBook of X\n*** END OF THIS PROJECT GUTENBERG EBOOK X ***\nLicense.\n"


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def spacy_words(text: str) -> list[str]:
    tokenizer = spacy.blank("en").tokenizer
    return [t.text for line in text.lower().split("\n") for t in tokenizer(line) if not t.is_space]


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Six small documents, one wrapped in Gutenberg boilerplate, one in a subdirectory."""
    root = tmp_path / "corpus"
    (root / "more").mkdir(parents=True)
    plays = {
        "a.txt": "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer\n",
        "b.txt": GUTENBERG_HEAD + "Now is the winter of our discontent\nMade glorious summer by this sun of York;\n" + GUTENBERG_FOOT,
        "c.txt": "If music be the food of love, play on;\nGive me excess of it, that, surfeiting,\n",
        "d.txt": "All the world's a stage,\nAnd all the men and women merely players;\n" * 3,
        "e.txt": "O Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name;\n",
        "more/f.txt": "The quality of mercy is not strain'd,\nIt droppeth as the gentle rain from heaven\n",
    }
    for name, text in plays.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def no_leftovers(directory: Path, name: str) -> bool:
    return not any(entry.startswith((name, f".{name}")) for entry in os.listdir(directory))


def test_help_shows_options_and_defaults():
    result = invoke("tokenize", "--help")
    assert result.exit_code == 0
    for expected in ("CORPUS...", "--out", "--vocab-size", "[default: 50000]", "--val-fraction", "[default: 0.05]",
                     "--seed", "--keep-case", "--workers", "--force"):
        assert expected in result.output


def test_tokenize_writes_a_store_that_matches_spacy(corpus, tmp_path):
    out = tmp_path / "tokens"
    result = invoke("tokenize", corpus, "--out", out, "--val-fraction", "0.2", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout
    store = TokenStore.open(str(out))
    manifest = store.meta.manifest
    assert [Path(e["path"]).relative_to(corpus).as_posix() for e in manifest] == \
        ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "more/f.txt"]
    # Independent reference: spaCy per file (Gutenberg lines cut by hand), vocabulary from train.
    docs = {e["path"]: spacy_words(Path(e["path"]).read_text(encoding="utf-8")) for e in manifest}
    b_path = str(corpus / "b.txt")
    docs[b_path] = spacy_words("Now is the winter of our discontent\nMade glorious summer by this sun of York;\n")
    assert [e["tokens"] for e in manifest] == [len(docs[e["path"]]) for e in manifest]
    split = {e["path"]: e["split"] for e in manifest}
    assert sorted(split.values()).count("val") >= 1 and "train" in split.values()
    counts = collections.Counter(w for path, words in docs.items() if split[path] == "train" for w in words)
    vocab = list(SPECIAL_TOKENS) + sorted(counts, key=lambda w: (-counts[w], w))
    assert store.vocab == vocab
    for name in ("train", "val"):
        expected = [i for path, words in docs.items() if split[path] == name
                    for i in [vocab.index(w) if w in vocab else 0 for w in words] + [1]]
        assert store.read(name).tolist() == expected
    assert store.meta.tokenizer["lowercase"] is True and store.meta.tokenizer["vocab_size"] == 50000
    assert store.meta.counts["skipped_files"] == 0


def test_keep_case_and_vocab_clipping(corpus, tmp_path):
    out = tmp_path / "tokens"
    result = invoke("tokenize", corpus / "a.txt", corpus / "e.txt", "--out", out, "--keep-case",
                    "--vocab-size", "5", "--val-fraction", "0")
    assert result.exit_code == 0, result.output
    store = TokenStore.open(str(out))
    assert "Romeo" in store.vocab and store.vocab_size == 5 and store.split_size("val") == 0
    ids = store.read("train")
    assert store.meta.counts["unk_tokens"] == int((ids == 0).sum()) > 0


def test_single_document_warns_that_val_is_empty(corpus, tmp_path):
    result = invoke("tokenize", corpus / "d.txt", "--out", tmp_path / "tokens")
    assert result.exit_code == 0
    assert "Warning: the validation split is empty" in result.stderr
    assert TokenStore.open(str(tmp_path / "tokens")).split_size("val") == 0


def test_output_is_byte_identical_for_any_worker_count(corpus, tmp_path):
    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    stores = []
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}"
        assert invoke("tokenize", corpus, "--out", out, "--workers", workers).exit_code == 0
        stores.append(files(out))
    assert stores[0] == stores[1] == stores[2] and "train/zarr.json" in stores[0]


def test_skippable_files_warn_and_are_recorded(corpus, tmp_path):
    (corpus / "z_binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (corpus / "z_empty.txt").write_bytes(b"")
    (corpus / "z_latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    out = tmp_path / "tokens"
    result = invoke("tokenize", corpus, "--out", out)
    assert result.exit_code == 0, result.output
    assert "Warning: skipped 3 of 9 files" in result.stderr
    for name in ("z_binary.txt (binary", "z_empty.txt (empty)", "z_latin1.txt (not UTF-8"):
        assert name in result.stderr
    meta = TokenStore.open(str(out)).meta
    assert meta.counts["skipped_files"] == 3
    assert {Path(e["path"]).name for e in meta.manifest if "skipped" in e} == {"z_binary.txt", "z_empty.txt", "z_latin1.txt"}


@pytest.mark.parametrize("case, message", [
    ("missing", r"Error: CORPUS .*nope\.txt: no such file or directory; check the path"),
    ("no_txt", r"Error: CORPUS .*docs: directory has no \.txt files"),
    ("all_skipped", r"Error: CORPUS has no usable text: all 2 files were skipped .*give UTF-8 text files"),
    ("giant_line", r"Error: .*giant\.txt: 1,000,001 characters without whitespace at character 0, over the 1,000,000"),
    ("vocab", r"Error: --vocab-size 2: must be at least 3"),
    ("fraction", r"Error: --val-fraction 1.0: must be in \[0, 1\)"),
    ("workers", r"Error: --workers 0: must be at least 1"),
])
def test_bad_input_is_a_one_line_error(tmp_path, corpus, case, message):
    extra: list = []
    if case == "missing":
        inputs = [corpus, tmp_path / "nope.txt"]
    elif case == "no_txt":
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "readme.md").write_text("hi")
        inputs = [tmp_path / "docs"]
    elif case == "all_skipped":
        (tmp_path / "x.txt").write_bytes(b"\x00")
        (tmp_path / "y.txt").write_bytes(b"")
        inputs = [tmp_path / "x.txt", tmp_path / "y.txt"]
    elif case == "giant_line":
        (tmp_path / "giant.txt").write_text("z" * 1_000_001)
        inputs = [corpus, tmp_path / "giant.txt"]
        extra = ["--workers", "2"]
    else:
        inputs = [corpus]
        extra = {"vocab": ["--vocab-size", "2"], "fraction": ["--val-fraction", "1.0"], "workers": ["--workers", "0"]}[case]
    result = invoke("tokenize", *inputs, "--out", tmp_path / "tokens", *extra)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), result.stderr
    assert no_leftovers(tmp_path, "tokens")


def test_no_corpus_is_a_usage_error(tmp_path):
    result = invoke("tokenize", "--out", tmp_path / "tokens")
    assert result.exit_code == 2 and "Missing argument 'CORPUS...'" in result.output


def test_existing_output_needs_force(corpus, tmp_path):
    out = tmp_path / "tokens"
    assert invoke("tokenize", corpus, "--out", out).exit_code == 0
    first = TokenStore.open(str(out)).fingerprint
    result = invoke("tokenize", corpus / "a.txt", corpus / "c.txt", "--out", out)
    assert result.exit_code == 2
    assert f"Error: --out {out} already exists; choose another path or pass --force" in result.stderr
    assert TokenStore.open(str(out)).fingerprint == first  # untouched
    assert invoke("tokenize", corpus / "a.txt", corpus / "c.txt", "--out", out, "--force").exit_code == 0
    assert TokenStore.open(str(out)).fingerprint != first


def test_failure_while_writing_leaves_no_store(corpus, tmp_path, monkeypatch):
    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zarr.Group, "create_array", disk_full)
    result = invoke("tokenize", corpus, "--out", tmp_path / "tokens")
    assert result.exit_code == 1 and "Error: No space left on device; check the path" in result.output
    assert "Traceback" not in result.output and no_leftovers(tmp_path, "tokens")


def test_inspect_prints_the_summary(corpus, tmp_path):
    out = tmp_path / "tokens"
    assert invoke("tokenize", corpus, "--out", out, "--workers", "1").exit_code == 0
    result = invoke("inspect", out)
    assert result.exit_code == 0
    store = TokenStore.open(str(out))
    assert result.stdout.startswith(store.summary()) and "CRC32C OK" in result.stdout
    assert "superstill.tokens" in result.stdout and store.fingerprint in result.stdout


@pytest.mark.parametrize("case, message", [
    ("missing", "no such store"),
    ("plain_dir", "is not a superstill store"),
    ("foreign_group", "not a superstill store (no superstill.format attribute)"),
    ("future_format", "has format 'superstill.future', which this version cannot inspect"),
])
def test_inspect_rejects_what_it_cannot_read(tmp_path, case, message):
    path = tmp_path / "thing"
    if case == "plain_dir":
        path.mkdir()
    elif case == "foreign_group":
        zarr.open_group(str(path), mode="w").attrs["other"] = 1
    elif case == "future_format":
        zarr.open_group(str(path), mode="w").attrs["superstill"] = {"format": "superstill.future"}
    result = invoke("inspect", path)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


@pytest.mark.slow
def test_fixture_corpus_agrees_with_an_independent_spacy_run(fixture_corpus, tmp_path):
    out, vocab_size = tmp_path / "tokens", 2000  # below the fixture's distinct words: some become UNK
    result = invoke("tokenize", fixture_corpus, "--out", out, "--workers", "2", "--vocab-size", vocab_size)
    assert result.exit_code == 0, result.output
    store = TokenStore.open(str(out))
    manifest = store.meta.manifest
    assert len(manifest) == len(list(fixture_corpus.glob("*.txt"))) and store.meta.counts["skipped_files"] == 0
    tokenizer = spacy.blank("en").tokenizer
    docs, split = [], []
    for entry in manifest:
        text = Path(entry["path"]).read_text(encoding="utf-8")
        assert "PROJECT GUTENBERG" not in text.upper()  # these copies carry no boilerplate to strip
        docs.append([t.text for doc in tokenizer.pipe(text.lower().split("\n")) for t in doc if not t.is_space])
        split.append(entry["split"])
        assert entry["tokens"] == len(docs[-1])
    counts = collections.Counter(w for words, s in zip(docs, split) if s == "train" for w in words)
    assert len(counts) > vocab_size - len(SPECIAL_TOKENS)  # the clipping and the UNK path are exercised
    vocab = list(SPECIAL_TOKENS) + sorted(counts, key=lambda w: (-counts[w], w))[:vocab_size - len(SPECIAL_TOKENS)]
    assert store.vocab == vocab
    ids = {w: i for i, w in enumerate(vocab)}
    for name in ("train", "val"):
        expected = [i for words, s in zip(docs, split) if s == name for i in [ids.get(w, 0) for w in words] + [1]]
        assert np.array_equal(store.read(name), np.array(expected)), name
    # Whole documents are held out until they reach --val-fraction (default 0.05) and no further:
    # dropping the largest held-out document would leave too few.
    held = [len(words) for words, s in zip(docs, split) if s == "val"]
    target = 0.05 * sum(len(words) for words in docs)
    assert sum(held) >= target > sum(held) - max(held)
