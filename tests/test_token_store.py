"""The token store on disk: round trip, dtype, fingerprint, completeness, overwrite rules."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import zarr

from pipeline.errors import UserError
from pipeline.token_store import (EOD, SPECIAL_TOKENS, TokenStore, TokenStoreMeta, compute_fingerprint,
                                  smallest_uint_dtype, write_token_store)


def make_meta() -> TokenStoreMeta:
    return TokenStoreMeta(vocab_size=len(SPECIAL_TOKENS), dtype="", tokenizer={"language": "en"},
                          counts={"train_documents": 2, "val_documents": 1, "unk_tokens": 3},
                          manifest=[{"path": "a.txt", "tokens": 5}, {"path": "b.bin", "skipped": "binary"}])


def make_splits(vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"train": rng.integers(0, vocab_size, 5000), "val": rng.integers(0, vocab_size, 700)}


def vocabulary(size: int) -> list[str]:
    return list(SPECIAL_TOKENS) + [f"w{i}" for i in range(size - len(SPECIAL_TOKENS))]


@pytest.mark.parametrize("size, dtype", [(200, np.uint8), (256, np.uint8), (257, np.uint16), (70_000, np.uint32)])
def test_round_trip(tmp_path, size, dtype):
    vocab, splits = vocabulary(size), make_splits(size)
    store = write_token_store(str(tmp_path / "s"), splits, vocab, make_meta())
    again = TokenStore.open(str(tmp_path / "s"))
    for opened in (store, again):
        assert opened.vocab == vocab and opened.vocab_size == size
        assert opened.meta.dtype == np.dtype(dtype).name == opened.read("train").dtype.name
        for name, ids in splits.items():
            assert np.array_equal(opened.read(name), ids) and opened.split_size(name) == ids.size
        assert opened.meta.complete and opened.meta.manifest == make_meta().manifest
        assert opened.unk_id == 0 and opened.eod_id == 1 and opened.vocab[opened.eod_id] == EOD
    assert smallest_uint_dtype(size) == np.dtype(dtype)


def test_fingerprint_covers_vocabulary_and_ids(tmp_path):
    vocab, splits = vocabulary(300), make_splits(300)
    store = write_token_store(str(tmp_path / "s"), splits, vocab, make_meta())
    # Independent restatement of the documented digest.
    digest = hashlib.sha256(b"superstill.tokens/1\n" + "\n".join(vocab).encode())
    for name in ("train", "val"):
        ids = splits[name].astype(np.uint16)
        digest.update(f"\n{name}:uint16:{ids.size}\n".encode() + ids.tobytes())
    assert store.fingerprint == digest.hexdigest()
    changed = dict(splits, val=splits["val"].copy())
    changed["val"][0] = (changed["val"][0] + 1) % 300
    assert compute_fingerprint(vocab, changed) != compute_fingerprint(vocab, splits)
    assert compute_fingerprint(vocab[:-1] + ["other"], splits) != compute_fingerprint(vocab, splits)


def test_empty_val_split(tmp_path):
    splits = {"train": np.array([5, 6, 1]), "val": np.zeros(0, int)}
    store = write_token_store(str(tmp_path / "s"), splits, vocabulary(10), make_meta())
    assert store.split_size("val") == 0 and store.read("val").size == 0


def test_existing_output_needs_force(tmp_path):
    out = str(tmp_path / "s")
    write_token_store(out, make_splits(50), vocabulary(50), make_meta())
    with pytest.raises(UserError, match=r"already exists; choose another path or pass --force"):
        write_token_store(out, make_splits(50, 1), vocabulary(50), make_meta())
    store = write_token_store(out, make_splits(50, 1), vocabulary(50), make_meta(), force=True)
    assert np.array_equal(TokenStore.open(out).read("train"), make_splits(50, 1)["train"])
    assert store.fingerprint == TokenStore.open(out).fingerprint


def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real = zarr.Group.create_array

    def crash_on_second_array(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # e.g. Ctrl-C between the two splits
        return real(self, *args, **kwargs)

    monkeypatch.setattr(zarr.Group, "create_array", crash_on_second_array)
    with pytest.raises(KeyboardInterrupt):
        write_token_store(str(tmp_path / "s"), make_splits(50), vocabulary(50), make_meta())
    assert len(calls) == 2
    assert os.listdir(tmp_path) == []  # neither the store nor its temporary sibling


def test_incomplete_store_is_refused(tmp_path):
    out = str(tmp_path / "s")
    write_token_store(out, make_splits(50), vocabulary(50), make_meta())
    group = zarr.open_group(out, mode="r+")
    group.attrs["superstill"] = dict(group.attrs["superstill"], complete=False)
    with pytest.raises(UserError, match=r"is incomplete .*re-run it with --force"):
        TokenStore.open(out)


def test_missing_and_foreign_paths_are_refused(tmp_path):
    with pytest.raises(UserError, match=r"--tokens .*nothing: no such token store"):
        TokenStore.open(str(tmp_path / "nothing"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="is not a token store"):
        TokenStore.open(str(tmp_path / "plain"))
    zarr.open_group(str(tmp_path / "other"), mode="w").attrs["superstill"] = {"format": "superstill.logits"}
    with pytest.raises(UserError, match="no superstill.tokens metadata"):
        TokenStore.open(str(tmp_path / "other"))


def test_vocabulary_must_start_with_special_tokens(tmp_path):
    with pytest.raises(ValueError, match="must start with"):
        write_token_store(str(tmp_path / "s"), make_splits(5), ["a", "b", "c", "d", "e"], make_meta())
    assert not (tmp_path / "s").exists()


def test_summary_names_what_matters(tmp_path):
    store = write_token_store(str(tmp_path / "s"), make_splits(50), vocabulary(50), make_meta())
    text = store.summary()
    for expected in (store.fingerprint, "50 ids (uint8)", "5,000 tokens in 2 documents", "700 tokens in 1 documents",
                     "1 used, 1 skipped", "skipped b.bin: binary"):
        assert expected in text


def test_small_token_store_fixture_is_consistent(small_token_store):
    """The shared fixture other tests build on: both splits present, metadata adds up."""
    store, meta = small_token_store, small_token_store.meta
    train, val = store.read("train"), store.read("val")
    assert meta.counts["train_documents"] == 4 and meta.counts["val_documents"] == 1
    assert (train == store.eod_id).sum() == 4 and (val == store.eod_id).sum() == 1
    assert train[-1] == store.eod_id and val[-1] == store.eod_id
    assert meta.counts["train_tokens"] == train.size and meta.counts["val_tokens"] == val.size
    assert store.vocab_size == 2000 and int(max(train.max(), val.max())) < 2000
    used = [e for e in meta.manifest if "split" in e]
    assert sum(e["tokens"] for e in used) == train.size + val.size - 5
    assert meta.counts["unk_tokens"] == int((train == 0).sum() + (val == 0).sum())
