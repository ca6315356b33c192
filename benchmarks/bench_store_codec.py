"""Benchmark: logit-store size and speed per codec preset and layout, on realistic teacher rows.

    python benchmarks/bench_store_codec.py [--corpus DIR] [--positions N] [--teacher mixture|bigram|both]

Teacher rows come from real text: the Shakespeare corpus is tokenized with spacy.blank("en").tokenizer
(lowercased, line by line, whitespace dropped; vocabulary by frequency so frequent words get small
ids, as `pipeline tokenize` does), and an n-gram model fitted on all of it supplies the logits for N
consecutive positions from the middle of the corpus. Rows are made by the real
`teacher_rows_from_logits` (T = 1, 6) and written through the real `LogitStoreWriter`.

Two teachers, because repetition matters to an LZ compressor:
  bigram   log(0.9 P(w | prev) + 0.1 P(w)) - a smoothed bigram: rows repeat exactly for every
           occurrence of the same previous token, which flatters every codec;
  mixture  log(l1 P(w) + l2 P(w | prev) + l3 P(w | prev2 prev)) with (l1, l2, l3) ~ Dirichlet(1, 2, 2)
           drawn per position: like a real teacher, no two rows are the same.
The default codec is chosen on `mixture`. Reported per codec: stored bytes/position (all arrays,
shard indexes and checksums included; raw = int32 ids + float16 scores = 6k bytes), encode speed
(write_shard, positions/s) and decode speed (read_rows, positions/s) for whole-shard reads, 4,096-row
reads and random 256-row windows (each decodes a whole 4,096-row chunk). The layout lines compare
ways of storing ids + scores under one codec, plus one LOSSY reference (scores rounded to 8 mantissa
bits) that is not offered, only measured. Speeds are wall-clock on this machine's shared cores:
compare codecs within one run, not across runs.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import zarr  # noqa: E402
from zarr.codecs import Crc32cCodec  # noqa: E402

from pipeline.logit_store import CODECS, DEFAULT_CODEC, LogitStore, LogitStoreMeta, LogitStoreWriter  # noqa: E402
from pipeline.teacher_rows import TeacherRows, encode_scores, teacher_rows_from_logits  # noqa: E402

DEFAULT_CORPUS = REPO.parent / "shared/corpora/shakespeare"
TEMPERATURES = (1.0, 6.0)
SHARD_ROWS, CHUNK_ROWS = 65536, 4096
# Pick rule: a teacher on one GPU yields ~1M positions/s; a dump with ~10 writer cores keeps up if one core
# encodes >= 100k positions/s. Reads are from whole shards (blocks) in training: >= 200k positions/s per core.
MIN_ENCODE, MIN_DECODE = 100_000, 200_000


def tokenize(corpus: Path) -> tuple[np.ndarray, int]:
    """All files as one id sequence (an end-of-document id 1 after each); ids by frequency from 2."""
    import spacy

    tokenizer = spacy.blank("en").tokenizer
    docs = []
    for path in sorted(corpus.glob("*.txt")):
        lines = path.read_text(encoding="utf-8").lower().splitlines()
        docs.append([t.text for doc in tokenizer.pipe(lines) for t in doc if not t.is_space])
    counts = collections.Counter(w for doc in docs for w in doc)
    index = {w: i + 2 for i, (w, _) in enumerate(counts.most_common())}
    ids = np.array([i for doc in docs for i in [index[w] for w in doc] + [1]], dtype=np.int64)
    return ids, len(index) + 2


class NGram:
    """Unigram, bigram and trigram relative frequencies, stored sparse (CSR by context)."""

    def __init__(self, ids: np.ndarray, vocab: int):
        self.ids, self.vocab = ids, vocab
        self.unigram = torch.from_numpy((np.bincount(ids, minlength=vocab) + 0.1) / (ids.size + 0.1 * vocab)).float()
        self.bigram = self._table(ids[:-1], ids[1:])
        self.tri_keys, tri_context = np.unique(ids[:-2] * vocab + ids[1:-1], return_inverse=True)
        self.trigram = self._table(tri_context, ids[2:])

    def _table(self, context: np.ndarray, following: np.ndarray):
        pairs, counts = np.unique(context * self.vocab + following, return_counts=True)
        ctx, nxt = pairs // self.vocab, pairs % self.vocab
        starts = np.searchsorted(ctx, np.arange(ctx.max() + 2))
        totals = np.bincount(ctx, weights=counts)  # pairs are sorted by context, so ctx is too
        return starts, nxt, counts / totals[ctx]

    @staticmethod
    def _scatter(out: torch.Tensor, table, contexts: np.ndarray, weights: np.ndarray) -> None:
        """out[r, w] += weights[r] * P(w | contexts[r]) for every row r."""
        starts, nxt, prob = table
        lo, hi = starts[contexts], starts[contexts + 1]
        lengths = hi - lo
        flat = np.repeat(lo - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        rows = np.repeat(np.arange(len(contexts)), lengths)
        out[torch.from_numpy(rows), torch.from_numpy(nxt[flat])] += torch.from_numpy(
            (np.repeat(weights, lengths) * prob[flat]).astype(np.float32))

    def logits(self, positions: np.ndarray, teacher: str, rng: np.random.Generator) -> torch.Tensor:
        """[B, V] log-probabilities of the token after each position."""
        if teacher == "bigram":
            weights = np.tile([0.1, 0.9, 0.0], (len(positions), 1))
        else:
            weights = rng.dirichlet((1.0, 2.0, 2.0), size=len(positions))
        out = torch.from_numpy(weights[:, :1].astype(np.float32)) * self.unigram[None, :]
        self._scatter(out, self.bigram, self.ids[positions], weights[:, 1])
        if weights[:, 2].any():
            tri = np.searchsorted(self.tri_keys, self.ids[positions - 1] * self.vocab + self.ids[positions])
            self._scatter(out, self.trigram, tri, weights[:, 2])
        return torch.log(out)


def make_rows(model: NGram, start: int, count: int, teacher: str, ks: tuple[int, ...]):
    """TeacherRows per k for positions [start, start + count), plus the first batch's dense logits."""
    rng = np.random.default_rng(0)
    parts: dict[int, list[TeacherRows]] = {k: [] for k in ks}
    first = None
    for a in range(start, start + count, 1024):
        logits = model.logits(np.arange(a, min(a + 1024, start + count)), teacher, rng)
        first = logits if first is None else first
        for k in ks:
            parts[k].append(teacher_rows_from_logits(logits, k, TEMPERATURES))
    return {k: TeacherRows.cat(p) for k, p in parts.items()}, first


def round_mantissa(scores: np.ndarray, bits: int) -> np.ndarray:
    """float16 rounded to `bits` of its 10 mantissa bits (lossy; only for the reference line)."""
    drop = 10 - bits
    pattern = scores.view(np.uint16).astype(np.uint32)
    return (((pattern + (1 << (drop - 1))) >> drop) << drop).astype(np.uint16).view(np.float16)


def layout_bytes(rows: TeacherRows, codec: str, workdir: Path) -> dict[str, float]:
    """ids + scores bytes/position under three lossless layouts (same sharding, codec, crc32c)."""
    ids, scores = rows.ids.numpy().astype(np.uint16), rows.scores.numpy()
    order = np.argsort(ids, axis=1, kind="stable")
    ascending, permuted = np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)
    ascending_deltas = np.diff(ascending, axis=1, prepend=np.zeros((len(ids), 1), np.uint16))
    layouts = {"rank ids + float16 scores": (ids, scores),
               "rank ids + score deltas (used)": (ids, encode_scores(scores)),
               "ascending id deltas + permuted scores": (ascending_deltas, permuted),
               "LOSSY 8-bit-mantissa score deltas": (ids, encode_scores(round_mantissa(scores, 8)))}
    group = zarr.open_group(str(workdir / f"layouts-{codec}-{rows.k}"), mode="w", zarr_format=3)
    out = {}
    for name, arrays in layouts.items():
        stored = 0
        for i, values in enumerate(arrays):
            array = group.create_array(f"{len(out)}/{i}", shape=values.shape, dtype=values.dtype,
                                       chunks=(CHUNK_ROWS, rows.k), shards=(SHARD_ROWS, rows.k),
                                       compressors=CODECS[codec]() + [Crc32cCodec()])
            for a in range(0, len(values), SHARD_ROWS):
                array[a:a + SHARD_ROWS] = values[a:a + SHARD_ROWS]
            stored += array.nbytes_stored()
        out[name] = stored / len(rows)
    return out


def measure_codec(rows: TeacherRows, codec: str, workdir: Path) -> dict[str, float]:
    """Write one store with `codec` through the real writer, then read it back two ways."""
    location = str(workdir / f"{codec}-{rows.k}-{time.monotonic_ns()}")
    meta = LogitStoreMeta(token_fingerprint="bench", vocab_size=rows.vocab_size, k=rows.k, positions={"train": len(rows)},
                          context=256, stride=128, teacher={"model": "n-gram"}, temperatures=TEMPERATURES,
                          shard_rows=SHARD_ROWS, chunk_rows=CHUNK_ROWS, codec=codec)
    writer = LogitStoreWriter.create(location, meta)
    started = time.perf_counter()
    for shard in range(meta.n_shards("train")):
        writer.write_shard("train", shard, rows[slice(*writer.shard_range("train", shard))])
    encode = len(rows) / (time.perf_counter() - started)
    stats = writer.finish().stats
    store = LogitStore.open(location)
    speeds = {"encode": encode}
    for label, size in (("shard", SHARD_ROWS), ("chunk", CHUNK_ROWS)):
        started = time.perf_counter()
        for a in range(0, len(rows), size):
            back = store.read_rows("train", a, min(a + size, len(rows)))
            assert torch.equal(back.ids, rows.ids[a:a + size]) and torch.equal(back.scores, rows.scores[a:a + size])
        speeds[label] = len(rows) / (time.perf_counter() - started)
    windows = np.random.default_rng(1).integers(0, len(rows) - 256, size=64)
    started = time.perf_counter()
    for a in windows:
        store.read_rows("train", int(a), int(a) + 256)
    speeds["window"] = 256 * len(windows) / (time.perf_counter() - started)
    return {"bytes": stats["bytes_per_position"], **speeds}


def unlisted_accuracy(rows: TeacherRows, logits: torch.Tensor) -> list[str]:
    """How far the unlisted-T estimate of c_T and the tail is from the dense truth."""
    lines = []
    n = len(logits)
    for t in (0.5, 2.0, 3.0, 4.0, 10.0):
        shifted = (logits - logits.max(1, keepdim=True).values) / t
        true_c = torch.logsumexp(shifted, 1)
        true_tail = 1 - torch.exp(shifted.gather(1, rows.ids[:n]) - true_c[:, None]).sum(1)
        _, logp, tail = rows[:n].at_temperature(t)
        est_c = rows.scores[:n, 0].float() / t - logp[:, 0]
        low, high = rows[:n].log_normalizer_bounds(t)
        lines.append(f"  T={t:<4g} |c error| mean {float((est_c - true_c).abs().mean()):.4f} max "
                     f"{float((est_c - true_c).abs().max()):.4f} (bound width mean {float((high - low).mean()):.4f}); "
                     f"tail {float(true_tail.mean()):.4f} true vs {float(tail.mean()):.4f} estimated (means)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--positions", type=int, default=SHARD_ROWS)
    parser.add_argument("--teacher", choices=("mixture", "bigram", "both"), default="both")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"corpus not found at {args.corpus}; pass --corpus")
    torch.set_num_threads(1)
    started = time.perf_counter()
    ids, vocab = tokenize(args.corpus)
    model = NGram(ids, vocab)
    start = ids.size // 2
    print(f"corpus: {ids.size:,} tokens, vocabulary {vocab:,}; positions {start:,}..{start + args.positions - 1:,} "
          f"({time.perf_counter() - started:.0f} s to tokenize and fit)")
    teachers = ("mixture", "bigram") if args.teacher == "both" else (args.teacher,)
    chosen = {}
    with tempfile.TemporaryDirectory() as tmp:
        for teacher in teachers:
            rows_by_k, first_logits = make_rows(model, start, args.positions, teacher, (64, 128))
            for k, rows in rows_by_k.items():
                mass = 1 - rows.tail_mass.mean(0)
                print(f"\n== teacher {teacher}, k={k}: mean top-k mass {mass[0]:.3f} at T=1, {mass[1]:.3f} at T=6; "
                      f"raw int32 ids + float16 scores = {6 * k} B/pos")
                for codec in ("zstd-3", DEFAULT_CODEC):
                    sizes = layout_bytes(rows, codec, Path(tmp))
                    print(f"  layout ({codec}, ids + scores only): " + "; ".join(f"{n} {b:.1f}" for n, b in sizes.items()))
                print(f"  {'codec':<24}{'B/pos':>7}{'vs raw':>8}{'encode pos/s':>14}   read pos/s: {'shards':>9}"
                      f"{'4096 rows':>11}{'256 rows':>10}")
                for codec in CODECS:
                    r = measure_codec(rows, codec, Path(tmp))
                    if teacher == "mixture" and k == 64:
                        chosen[codec] = r
                    print(f"  {codec:<24}{r['bytes']:7.1f}{r['bytes'] / (6 * k):8.1%}{r['encode']:14,.0f}"
                          f"{'':15}{r['shard']:9,.0f}{r['chunk']:11,.0f}{r['window']:10,.0f}")
            if teacher == "mixture":
                print("\nunlisted temperatures (k=64, first 1,024 positions, listed T = 1, 6):")
                print("\n".join(unlisted_accuracy(rows_by_k[64], first_logits)))
    if chosen:
        fast = [c for c, r in chosen.items() if r["encode"] >= MIN_ENCODE and r["shard"] >= MIN_DECODE]
        rule = f"encoding >= {MIN_ENCODE:,} and reading shards >= {MIN_DECODE:,} positions/s"
        if fast:  # sizes within 1% of the smallest count as equal; among those the faster encoder wins
            smallest = min(chosen[c]["bytes"] for c in fast)
            best = max((c for c in fast if chosen[c]["bytes"] <= 1.01 * smallest), key=lambda c: chosen[c]["encode"])
            print(f"\npick at k=64 (mixture): among codecs {rule}, the fastest encoder within 1% of the smallest size: "
                  f"{best} ({chosen[best]['bytes']:.1f} B/pos, target <= 100); the library default is {DEFAULT_CODEC}")
        else:
            print(f"\nno codec met {rule} in this run (shared cores?); the library default is {DEFAULT_CODEC}")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
