"""The logit store and the teacher-row definition, checked against plain dense references.

References are computed independently: float64 numpy log-softmax of the same logits, numpy argsort
for the ranking, and a float64 sum over the ids outside the top k for the tail.
"""

from __future__ import annotations

import dataclasses
import uuid

import fsspec
import numpy as np
import pytest
import torch

from pipeline.errors import UserError
from pipeline.logit_store import CODECS, LogitStore, LogitStoreMeta, LogitStoreWriter
from pipeline.teacher_rows import TeacherRows, decode_scores, encode_scores, teacher_rows_from_logits
from pipeline.token_store import TokenStore, TokenStoreMeta, write_token_store

FP16_TOL = 2e-3  # relative rounding of a float16 score is <= 2^-11


def random_logits(n: int, vocab: int, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    """Gaussian logits plus a Zipf-like prior, so top-k sets and tails look like a language model's."""
    gen = torch.Generator().manual_seed(seed)
    prior = -1.1 * torch.log(torch.arange(1, vocab + 1, dtype=torch.float32))
    return prior + scale * torch.randn(n, vocab, generator=gen)


def reference(z: torch.Tensor, temperature: float, k: int):
    """float64 numpy: ranking, log-probabilities at the top k, and the tail mass."""
    x = z.double().numpy() / temperature
    logp = x - x.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    order = np.argsort(-z.numpy(), axis=1, kind="stable")[:, :k]
    mask = np.ones_like(logp, dtype=bool)
    np.put_along_axis(mask, order, False, axis=1)
    tail = np.where(mask, np.exp(logp), 0.0).sum(1)
    return order, np.take_along_axis(logp, order, 1), tail


def max_tail_variance(z: torch.Tensor, k: int, beta_max: float) -> np.ndarray:
    """[n] max over b in [0, beta_max] of the variance of tail scores weighted by exp(b * s)."""
    s = np.sort(z.double().numpy(), axis=1)[:, ::-1][:, k:]  # the tail's logits (shift does not matter)
    worst = np.zeros(len(s))
    for b in np.linspace(0, beta_max, 21):
        w = np.exp(b * (s - s.max(1, keepdims=True)))
        w /= w.sum(1, keepdims=True)
        mean = (w * s).sum(1, keepdims=True)
        worst = np.maximum(worst, (w * (s - mean) ** 2).sum(1))
    return worst * 1.05  # the grid may miss the maximum slightly


def make_meta(positions: dict[str, int], vocab: int = 40, k: int = 6, **changes) -> LogitStoreMeta:
    fields = dict(token_fingerprint="f" * 64, vocab_size=vocab, k=k, positions=positions, context=8, stride=4,
                  teacher={"checkpoint_sha256": "a" * 64, "model": {"n_layer": 1}}, temperatures=(1.0, 6.0),
                  shard_rows=8, chunk_rows=4)
    return LogitStoreMeta(**{**fields, **changes})


def write_all(location: str, meta: LogitStoreMeta, seed: int = 0) -> dict[str, TeacherRows]:
    """Create a store, fill every shard from random logits, finish; returns the rows written."""
    writer = LogitStoreWriter.create(location, meta)
    written = {}
    for i, (split, count) in enumerate(meta.positions.items()):
        rows = teacher_rows_from_logits(random_logits(count, meta.vocab_size, seed + i), meta.k, meta.temperatures)
        for shard in range(meta.n_shards(split)):
            start, stop = writer.shard_range(split, shard)
            writer.write_shard(split, shard, rows[start:stop])
        written[split] = rows
    writer.finish({"wall_time_s": 0.5})
    return written


def assert_rows_equal(a: TeacherRows, b: TeacherRows) -> None:
    for name in ("ids", "scores", "log_normalizer", "tail_mass"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.temperatures, a.vocab_size) == (b.temperatures, b.vocab_size)


# ---- rows ----------------------------------------------------------------------------------------

def test_full_vocabulary_rows_reproduce_softmax_at_any_temperature():
    z = random_logits(12, 30)
    rows = teacher_rows_from_logits(z, k=30, temperatures=(1.0, 6.0))
    for t in (1.0, 6.0, 0.7, 2.5, 40.0):  # listed and unlisted: with k = V there is no tail to estimate
        ids, logp, tail = rows.at_temperature(t)
        order, ref_logp, _ = reference(z, t, 30)
        assert np.array_equal(ids.numpy(), order)
        assert np.allclose(logp.numpy(), ref_logp, atol=FP16_TOL * 20 / t + 1e-5)
        assert torch.all(tail == 0)
        assert np.allclose(np.exp(logp.double().numpy()).sum(1), 1.0, atol=1e-3)


@pytest.mark.parametrize("temperatures", [(1.0, 6.0), (0.5, 1.0, 2.0, 4.0)])
def test_listed_temperatures_are_exact(temperatures):
    z = random_logits(20, 50, seed=1)
    rows = teacher_rows_from_logits(z, k=7, temperatures=temperatures)
    assert rows.scores.dtype == torch.float16 and torch.all(rows.scores[:, 0] == 0)
    for t in temperatures:
        ids, logp, tail = rows.at_temperature(t)
        order, ref_logp, ref_tail = reference(z, t, 7)
        assert np.array_equal(ids.numpy(), order)
        assert np.allclose(logp.numpy(), ref_logp, atol=FP16_TOL * 20 / t + 1e-5)
        assert np.allclose(tail.numpy(), ref_tail, rtol=1e-4, atol=1e-7)


def test_tail_is_not_one_minus_sum_when_tiny():
    z = random_logits(4, 200, seed=2, scale=1.0)
    z[:, :5] += 40.0  # the top 5 hold all but ~e^-40 of the mass
    rows = teacher_rows_from_logits(z, k=5, temperatures=(1.0,))
    _, _, ref_tail = reference(z, 1.0, 5)
    assert np.all(ref_tail < 1e-12)
    assert np.allclose(rows.tail_mass[:, 0].numpy(), ref_tail, rtol=1e-3)


@pytest.mark.parametrize("scale", [0.5, 3.0, 8.0])
def test_unlisted_temperature_is_bounded_and_ranked_exactly(scale):
    z = random_logits(64, 300, seed=3, scale=scale)
    rows = teacher_rows_from_logits(z, k=16, temperatures=(1.0, 6.0))
    variance = max_tail_variance(z, 16, 1 / 6)
    for t in (0.3, 0.8, 1.5, 3.0, 10.0, 200.0):
        ids, logp, tail = rows.at_temperature(t)
        order, ref_logp, ref_tail = reference(z, t, 16)
        assert np.array_equal(ids.numpy(), order)
        # Relative log-probabilities (hence ranking and top-k shape) are exact at any T.
        rel = logp.numpy() - logp.numpy()[:, :1]
        assert np.allclose(rel, ref_logp - ref_logp[:, :1], atol=FP16_TOL * 20 / t + 1e-4)
        # c_T lies within the documented bounds and the estimate within half their width.
        true_c = (rows.scores.float()[:, 0].numpy() / t) - ref_logp[:, 0]
        low, high = (b.numpy() for b in rows.log_normalizer_bounds(t))
        slack = FP16_TOL * 20 / t + 1e-4
        assert np.all(low - slack <= true_c) and np.all(true_c <= high + slack)
        est_c = rows.scores.float()[:, 0].numpy() / t - logp.numpy()[:, 0]
        assert np.all((low - slack <= est_c) & (est_c <= high + slack))
        if t < 6.0:  # below the largest listed T the estimate is the middle of the bounds
            assert np.all(np.abs(est_c - true_c) <= (high - low) / 2 + slack)
        else:  # above it, the chord of a convex f: off by <= b (b1 - b) / 2 * max tilted variance of tail scores
            b, b1 = 1 / t, 1 / 6
            assert np.all(np.abs(est_c - true_c) <= b * (b1 - b) / 2 * variance + slack)
        # The estimated distribution is normalized: top-k plus tail sums to 1.
        assert np.allclose(np.exp(logp.double().numpy()).sum(1) + tail.numpy(), 1.0, atol=1e-5)
        assert np.all((tail.numpy() >= 0) & (tail.numpy() <= 1))


def test_bad_temperature_or_k_is_a_user_error():
    z = random_logits(3, 10)
    with pytest.raises(UserError, match="between 1 and the vocabulary size 10"):
        teacher_rows_from_logits(z, k=11)
    with pytest.raises(UserError, match="must be a finite number > 0"):
        teacher_rows_from_logits(z, k=3, temperatures=(1.0, 0.0))
    rows = teacher_rows_from_logits(z, k=3)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(UserError, match="> 0"):
            rows.at_temperature(bad)


def test_rows_slice_concatenate_and_numpy_round_trip():
    rows = teacher_rows_from_logits(random_logits(10, 20), k=4)
    joined = TeacherRows.cat([rows[0:3], rows[3:10]])
    assert_rows_equal(joined, rows)
    back = TeacherRows.from_numpy(**rows.to_numpy(), temperatures=rows.temperatures, vocab_size=20)
    assert_rows_equal(back, rows)


def test_score_encoding_is_lossless_for_every_float16():
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(-1, 64)  # incl. inf, nan, -0
    assert np.array_equal(decode_scores(encode_scores(every)).view(np.uint16), every.view(np.uint16))


# ---- store ---------------------------------------------------------------------------------------

def test_round_trip_with_partial_last_shard(tmp_path):
    meta = make_meta({"train": 21, "val": 5})  # 3 shards of 8 rows, the last holds 5
    written = write_all(str(tmp_path / "store"), meta)
    store = LogitStore.open(str(tmp_path / "store"))
    assert store.meta.complete and store.meta.dtypes["ids"] == "uint8"
    for split, rows in written.items():
        assert_rows_equal(store.read_rows(split, 0, len(rows)), rows)
    assert_rows_equal(store.read_rows("train", 6, 19), written["train"][6:19])  # across shard edges
    assert store.verify() == []
    stats = store.meta.stats
    tail = written["train"].tail_mass.double().numpy()
    assert stats["topk_mass"]["train"]["6"]["mean"] == pytest.approx(float((1 - tail[:, 1]).mean()))
    assert stats["bytes_per_position"] == pytest.approx(stats["stored_bytes"] / 26)
    assert stats["wall_time_s"] == 0.5


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_every_codec_preset_round_trips(tmp_path, codec):
    meta = make_meta({"train": 10}, vocab=70_000, codec=codec)  # ids need uint32
    written = write_all(str(tmp_path / codec), meta)
    store = LogitStore.open(str(tmp_path / codec))
    assert store.meta.dtypes["ids"] == "uint32" and store.meta.codec_json[-1] == {"name": "crc32c"}
    assert_rows_equal(store.read_rows("train", 0, 10), written["train"])


def test_resume_bookkeeping_and_incomplete_store_refused(tmp_path):
    location = str(tmp_path / "store")
    meta = make_meta({"train": 30})  # 4 shards
    rows = teacher_rows_from_logits(random_logits(30, 40), 6)
    writer = LogitStoreWriter.create(location, meta)
    for shard in (0, 2):
        writer.write_shard("train", shard, rows[slice(*writer.shard_range("train", shard))])
    assert writer.completed_shards("train") == {0, 2}
    with pytest.raises(UserError, match=r"incomplete \(2 of 4 shards.*--resume"):
        LogitStore.open(location)
    partial = LogitStore.open(location, require_complete=False)
    assert any("2 of 4 shards are not written (1, 3)" in p for p in partial.verify())
    with pytest.raises(UserError, match="cannot finish, train shards 1, 3 are not written"):
        writer.finish()
    with pytest.raises(UserError, match="different settings.*k: 6 != 5"):
        LogitStoreWriter.open_for_writing(location, expected=dataclasses.replace(meta, k=5))
    with pytest.raises(UserError, match="different settings.*precision: 'fp32' != 'bf16-autocast-fp32-head'"):
        LogitStoreWriter.open_for_writing(location, expected=dataclasses.replace(meta, precision="bf16-autocast-fp32-head"))
    resumed = LogitStoreWriter.open_for_writing(location, expected=meta)
    for shard in sorted(set(range(4)) - resumed.completed_shards("train")):
        resumed.write_shard("train", shard, rows[slice(*resumed.shard_range("train", shard))])
    resumed.finish()
    assert_rows_equal(LogitStore.open(location).read_rows("train", 0, 30), rows)
    with pytest.raises(UserError, match="already complete"):
        LogitStoreWriter.open_for_writing(location)


def test_write_shard_rejects_wrong_rows(tmp_path):
    writer = LogitStoreWriter.create(str(tmp_path / "s"), make_meta({"train": 10}))
    rows = teacher_rows_from_logits(random_logits(8, 40), 6)
    with pytest.raises(ValueError, match="needs 2 rows"):
        writer.write_shard("train", 1, rows)
    with pytest.raises(ValueError, match="temperatures"):
        writer.write_shard("train", 0, teacher_rows_from_logits(random_logits(8, 40), 6, (1.0,)))
    with pytest.raises(UserError, match="no 'val' split"):
        writer.write_shard("val", 0, rows)
    assert writer.completed_shards("train") == set()


def token_store(location: str, vocab_size: int = 40, seed: int = 0) -> TokenStore:
    rng = np.random.default_rng(seed)
    vocab = ["<unk>", "<eod>"] + [f"w{i}" for i in range(vocab_size - 2)]
    meta = TokenStoreMeta(vocab_size=vocab_size, dtype="", tokenizer={"test": True}, counts={}, manifest=[])
    splits = {"train": rng.integers(2, vocab_size, 21), "val": rng.integers(2, vocab_size, 5)}
    return write_token_store(location, splits, vocab, meta)


def test_check_matches_names_the_mismatch(tmp_path):
    tokens = token_store(str(tmp_path / "tokens"))
    meta = make_meta({"train": 21}, token_fingerprint=tokens.fingerprint)
    write_all(str(tmp_path / "good"), meta)
    good = LogitStore.open(str(tmp_path / "good"))
    good.check_matches(tokens, "train")
    with pytest.raises(UserError, match="has no 'val' split"):
        good.check_matches(tokens, "val")
    other = token_store(str(tmp_path / "other"), seed=1)
    with pytest.raises(UserError, match="fingerprint"):
        good.check_matches(other, "train")
    bigger = token_store(str(tmp_path / "bigger"), vocab_size=41)
    with pytest.raises(UserError, match="vocabulary of 40 ids but --tokens .* has 41"):
        good.check_matches(bigger, "train")


def flip_byte(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_chunk_and_index_are_named(tmp_path):
    location = tmp_path / "store"
    write_all(str(location), make_meta({"train": 16}))  # 2 shards of 2 chunks
    shard_file = location / "train" / "score_deltas" / "c" / "1" / "0"
    raw = shard_file.read_bytes()
    index = np.frombuffer(raw[-(16 * 2 + 4):-4], dtype="<u8").reshape(2, 2)  # (offset, length) per chunk
    flip_byte(shard_file, int(index[1, 0]) + 3)  # inside chunk 1 of shard 1
    problems = LogitStore.open(str(location)).verify()
    assert len(problems) == 1
    assert "train/score_deltas: chunk 1 of shard 1 (rows 12-15) fails its CRC32C check" in problems[0]
    assert str(shard_file) in problems[0]
    with pytest.raises(UserError, match=r"cannot read train rows 10-15: train/score_deltas: chunk 1 of shard 1 "
                                        r"\(rows 12-15\) fails its CRC32C check in .*c/1/0; the store is damaged"):
        LogitStore.open(str(location)).read_rows("train", 10, 16)
    index_file = location / "train" / "ids" / "c" / "0" / "0"
    flip_byte(index_file, index_file.stat().st_size - 10)
    problems = LogitStore.open(str(location)).verify()
    assert any(f"train/ids: shard 0 index fails its CRC32C check in {index_file}" in p for p in problems)
    lost = location / "train" / "tail_mass" / "c" / "0" / "0"
    lost.unlink()  # zarr alone would read the lost shard as zeros without complaint
    unchecked = LogitStore.open(str(location), check_files=False)
    assert np.all(unchecked.array("train", "tail_mass")[0:8] == 0)
    assert f"train/tail_mass: shard 0 file {lost} is missing" in unchecked.verify()
    with pytest.raises(UserError, match=f"1 shard file\\(s\\) missing \\(first: {lost}; zarr would read them as zeros"):
        LogitStore.open(str(location))


def test_memory_url_round_trip():
    location = f"memory://logit-store-{uuid.uuid4().hex}"
    try:
        meta = make_meta({"train": 12, "val": 3})
        written = write_all(location, meta)
        store = LogitStore.open(location)
        assert_rows_equal(store.read_rows("train", 0, 12), written["train"])
        assert store.verify() == []
        with pytest.raises(UserError, match="already exists"):
            LogitStoreWriter.create(location, meta)
    finally:
        fs, root = fsspec.core.url_to_fs(location)
        fs.rm(root, recursive=True)


def test_force_semantics(tmp_path):
    location = str(tmp_path / "store")
    first = write_all(location, make_meta({"train": 10}), seed=0)
    with pytest.raises(UserError, match=f"--out {location} already exists.*--force"):
        LogitStoreWriter.create(location, make_meta({"train": 10}))
    assert_rows_equal(LogitStore.open(location).read_rows("train", 0, 10), first["train"])  # untouched
    second = write_all_forced(location, make_meta({"val": 4}))
    store = LogitStore.open(location)
    assert store.meta.splits == ["val"] and not (tmp_path / "store" / "train").exists()
    assert_rows_equal(store.read_rows("val", 0, 4), second)


def write_all_forced(location: str, meta: LogitStoreMeta) -> TeacherRows:
    writer = LogitStoreWriter.create(location, meta, force=True)
    rows = teacher_rows_from_logits(random_logits(4, 40, seed=9), meta.k)
    writer.write_shard("val", 0, rows)
    writer.finish()
    return rows


def test_not_a_store_and_invalid_meta_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such logit store"):
        LogitStore.open(str(tmp_path / "missing"))
    token_store(str(tmp_path / "tokens"))
    with pytest.raises(UserError, match="is not a logit store"):
        LogitStore.open(str(tmp_path / "tokens"))
    for changes, message in [({"shard_rows": 6}, "--shard-rows 6 must be a positive multiple of --chunk-rows 4"), ({"stride": 9}, "--stride 9"),
                             ({"k": 41}, "--top-k 41"), ({"temperatures": (1.0, 1.0)}, "duplicates"),
                             ({"version": 3}, "newer")]:
        with pytest.raises(UserError, match=message):
            make_meta({"train": 4}, **changes)
    with pytest.raises(UserError, match="--split test"):
        make_meta({"test": 3})
    with pytest.raises(UserError, match="--codec 'lzma' is unknown"):
        LogitStoreWriter.create(str(tmp_path / "s"), make_meta({"train": 4}, codec="lzma"))


def test_summary_reports_what_a_user_needs(tmp_path):
    write_all(str(tmp_path / "store"), make_meta({"train": 21, "val": 5}))
    text = LogitStore.open(str(tmp_path / "store")).summary()
    for needle in ("superstill.logits v1", "complete", "top-6 of 40 ids", "T = 1, 6", "context 8, stride 4",
                   "train         21 positions, 3/3 shards", "bytes/position", "top-k mass    train: T=1 mean"):
        assert needle in text, needle
