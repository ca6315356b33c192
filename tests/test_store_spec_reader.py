"""docs/STORE.md is enough to read a store: a reader written only from it, with zarr + numpy.

The reading functions below import nothing from `pipeline` (the test uses pipeline only to create
the store). They follow the spec's steps: check format/version/complete, check the shard's marker,
decode ids and score deltas, and rebuild log softmax(z / T) at the top k plus the tail mass at a
listed T. The result is compared with a float64 numpy log-softmax of the logits the store was made
from. For sampled rows (section 10) the reader decodes the draws, and the reference redraws them with
the generator and inverse CDF the spec defines, written here in numpy from the spec alone.
"""

from __future__ import annotations

import numpy as np
import torch
import zarr

# --- the independent reader: zarr + numpy only ----------------------------------------------------


def open_store(location: str):
    group = zarr.open_group(location, mode="r")
    meta = group.attrs["superstill"]
    assert meta["format"] == "superstill.logits" and meta["version"] in (1, 2), "not a v1/v2 logit store"
    assert meta.get("rows", "topk") == "topk" or meta["version"] == 2, "sampled rows need version 2"
    assert meta["complete"], "store is incomplete"
    return group, meta


def read_rows(location: str, split: str, start: int, stop: int, temperature: float):
    """(ids [n, k] int64, log-probabilities [n, k] float32, tail [n] float32) for rows [start, stop)."""
    group, meta = open_store(location)
    shard_rows = meta["shard_rows"]
    markers = group[f"{split}/shard_complete"][:]
    assert all(markers[s] == 1 for s in range(start // shard_rows, (stop - 1) // shard_rows + 1))
    column = meta["temperatures"].index(temperature)
    ids = group[f"{split}/ids"][start:stop].astype(np.int64)
    deltas = group[f"{split}/score_deltas"][start:stop]
    scores = np.cumsum(deltas, axis=1, dtype=np.uint16).view(np.float16).astype(np.float32)
    c = group[f"{split}/log_normalizer"][start:stop, column]
    tail = group[f"{split}/tail_mass"][start:stop, column]
    return ids, scores / temperature - c[:, None], tail


def read_draws(location: str, split: str, start: int, stop: int) -> np.ndarray:
    """Sampled rows (section 10): the N draws of rows [start, stop), ascending, [n, N] int64."""
    group, meta = open_store(location)
    assert meta["rows"] == "sampled"
    shard_rows = meta["shard_rows"]
    markers = group[f"{split}/shard_complete"][:]
    assert all(markers[s] == 1 for s in range(start // shard_rows, (stop - 1) // shard_rows + 1))
    return np.cumsum(group[f"{split}/draw_deltas"][start:stop].astype(np.int64), axis=1)


# --- the spec's generator and inverse CDF (section 10.2), from the text alone ------------------------

MASK, G = (1 << 64) - 1, 0x9E3779B97F4A7C15


def mix(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def spec_draws(z: np.ndarray, seed: int, split: str, position: int, samples: int, temperature: float) -> np.ndarray:
    key = mix((seed + G * ({"train": 0, "val": 1}[split] + 1)) & MASK)
    state = mix((key + G * position) & MASK)
    u = np.sort([(mix((state + G * (i + 1)) & MASK) >> 11) * 2.0 ** -53 for i in range(samples)])
    x = z.astype(np.float64) / temperature
    cdf = np.cumsum(np.exp(x - x.max()))
    return np.searchsorted(cdf, u * cdf[-1], side="right")


# --- the test ---------------------------------------------------------------------------------------


def dense_reference(z: np.ndarray, temperature: float, k: int):
    x = z.astype(np.float64) / temperature
    logp = x - x.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    order = np.argsort(-z, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(logp, order, 1)
    mask = np.ones(z.shape, dtype=bool)
    np.put_along_axis(mask, order, False, axis=1)
    return order, top, np.where(mask, np.exp(logp), 0.0).sum(1)


def make_store(location: str, logits: dict[str, np.ndarray], k: int) -> None:
    from pipeline.logit_store import LogitStoreMeta, LogitStoreWriter
    from pipeline.teacher_rows import teacher_rows_from_logits

    vocab = next(iter(logits.values())).shape[1]
    meta = LogitStoreMeta(token_fingerprint="0" * 64, vocab_size=vocab, k=k,
                          positions={s: len(z) for s, z in logits.items()}, context=8, stride=4,
                          teacher={"checkpoint_sha256": "0" * 64, "model": {}}, temperatures=(1.0, 6.0),
                          shard_rows=8, chunk_rows=4)
    writer = LogitStoreWriter.create(location, meta)
    for split, z in logits.items():
        rows = teacher_rows_from_logits(torch.from_numpy(z), k, meta.temperatures)
        for shard in range(meta.n_shards(split)):
            writer.write_shard(split, shard, rows[slice(*writer.shard_range(split, shard))])
    writer.finish()


def test_spec_reader_rebuilds_each_distribution(tmp_path):
    rng = np.random.default_rng(7)
    prior = -1.1 * np.log(np.arange(1, 301))
    logits = {"train": (prior + 3 * rng.standard_normal((19, 300))).astype(np.float32),
              "val": (prior + 3 * rng.standard_normal((6, 300))).astype(np.float32)}
    location = str(tmp_path / "teacher.logits")
    make_store(location, logits, k=12)
    _, meta = open_store(location)
    assert meta["positions"] == {"train": 19, "val": 6} and meta["dtypes"]["ids"] == "uint16"
    for split, z in logits.items():
        for temperature in meta["temperatures"]:
            order, ref_logp, ref_tail = dense_reference(z, temperature, 12)
            n = len(z)
            for start, stop in ((0, n), (min(5, n - 1), min(11, n)), (n - 1, n)):  # all, across a shard, last
                ids, logp, tail = read_rows(location, split, start, stop, temperature)
                assert np.array_equal(ids, order[start:stop])
                assert np.allclose(logp, ref_logp[start:stop], atol=2e-3 * 20 / temperature + 1e-5)
                assert np.allclose(tail, ref_tail[start:stop], rtol=1e-4, atol=1e-7)
                assert np.allclose(np.exp(logp.astype(np.float64)).sum(1) + tail, 1.0, atol=2e-3)


def test_spec_reader_reads_sampled_rows_and_reproduces_the_draws(tmp_path):
    from pipeline.logit_store import LogitStoreMeta, LogitStoreWriter
    from pipeline.sampled_rows import sample_rows_from_logits

    rng = np.random.default_rng(8)
    prior = -1.1 * np.log(np.arange(1, 301))
    logits = {"train": (prior + 3 * rng.standard_normal((19, 300))).astype(np.float32),
              "val": (prior + 3 * rng.standard_normal((6, 300))).astype(np.float32)}
    samples, temperature, seed, location = 40, 1.5, 5, str(tmp_path / "sampled.logits")
    meta = LogitStoreMeta(token_fingerprint="0" * 64, vocab_size=300, k=samples,
                          positions={s: len(z) for s, z in logits.items()}, context=8, stride=4,
                          teacher={"checkpoint_sha256": "0" * 64, "model": {}}, temperatures=(temperature,),
                          shard_rows=8, chunk_rows=4, rows="sampled", samples=samples, sample_seed=seed)
    writer = LogitStoreWriter.create(location, meta)
    for split, z in logits.items():
        rows = sample_rows_from_logits(torch.from_numpy(z), np.arange(len(z)), split, samples, temperature, seed)
        for shard in range(meta.n_shards(split)):
            writer.write_shard(split, shard, rows[slice(*writer.shard_range(split, shard))])
    writer.finish()
    _, stored = open_store(location)
    assert (stored["version"], stored["samples"], stored["temperatures"], stored["dtypes"]["draw_deltas"]) == \
           (2, samples, [temperature], "uint16")
    for split, z in logits.items():
        draws = read_draws(location, split, 0, len(z))
        assert draws.shape == (len(z), samples) and (np.diff(draws, axis=1) >= 0).all()
        for position in range(len(z)):
            want = spec_draws(z[position], seed, split, position, samples, temperature)
            assert np.array_equal(draws[position], want), (split, position)
        assert np.array_equal(read_draws(location, split, 3, min(11, len(z))), draws[3:11])

