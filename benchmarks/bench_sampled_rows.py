"""Benchmark: sampled teacher rows against top-k rows on a real trained teacher: bytes, layouts, step time.

    python benchmarks/bench_sampled_rows.py --checkpoint runs/demo-seeds/teacher --tokens runs/demo-seeds/tokens
                                            [--positions 65536] [--steps 8]

(`pipeline experiment demo-seeds --out runs/demo-seeds` leaves the 3-epoch teacher these figures came
from.) The teacher's float32 logits for the first `--positions` training positions (default one 65,536-row shard) are computed once; then:

1. Bytes per position through the real LogitStoreWriter (everything stored: data arrays, shard indexes,
   checksums, markers; default codec) for sampled rows at N = 12, 50, 100 (T_s = 1) and top-k rows at
   k = 16, 64 (T = 1, 6), with the mean distinct ids and the rows' build + write speed.
2. Layouts for sampled rows at N = 50 (data arrays only, same sharding and codec): the stored one (the
   sorted draws as differences, [P, N]) against distinct ids with counts ([P, min(N, V)], padded) in
   three forms, and a ragged layout with no padding at all (not expressible as fixed-width zarr arrays;
   a lower bound for the ids-with-counts family).
3. Student step time (tiny-student, the teacher's vocabulary, real BatchStream reads from the stores
   above): baseline, top-64 at T = 1, sampled N = 50 at T = 1; ratios to the baseline, modes
   interleaved over `--rounds` rounds (median) since the cores are shared.
"""

from __future__ import annotations

import argparse
import statistics
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

from pipeline.batching import BatchStream, WindowPlan  # noqa: E402
from pipeline.checkpoint import load_model  # noqa: E402
from pipeline.config import resolve  # noqa: E402
from pipeline.distillation import DistillationSpec  # noqa: E402
from pipeline.dumping import owned_logits  # noqa: E402
from pipeline.logit_store import CODECS, DEFAULT_CODEC, LogitStore, LogitStoreMeta, LogitStoreWriter  # noqa: E402
from pipeline.model import GPT  # noqa: E402
from pipeline.objectives import DataObjective, SuperstillObjective  # noqa: E402
from pipeline.sampled_rows import sample_rows_from_logits  # noqa: E402
from pipeline.teacher_rows import teacher_rows_from_logits  # noqa: E402
from pipeline.teacher_windows import windows_for  # noqa: E402
from pipeline.token_store import TokenStore  # noqa: E402

from bench_student_step import timed  # noqa: E402 (one step-timing loop for the student benchmarks)

SHARD_ROWS, CHUNK_ROWS = 65536, 4096


def teacher_logits(checkpoint: str, ids: np.ndarray, positions: int) -> torch.Tensor:
    """[positions, V] float32 logits of the first positions, windows as the dump runs them."""
    model, _ = load_model(checkpoint)
    model.eval()
    windows = windows_for(0, positions, model.config.context, model.config.context, ids.size)
    with torch.inference_mode():
        return torch.cat([owned_logits(model, ids, windows[i:i + 64], torch.device("cpu"), None)
                          for i in range(0, len(windows), 64)])


def write_store(location: str, logits: torch.Tensor, rows: str, width: int) -> tuple[LogitStore, float]:
    """(the finished store, positions/s to build rows and write them) for top-k (width k) or sampled (N) rows."""
    n, vocab = logits.shape
    sampled = rows == "sampled"
    meta = LogitStoreMeta(token_fingerprint="benchmark", vocab_size=vocab, k=width, positions={"train": n},
                          context=64, stride=64, teacher={"checkpoint_sha256": "benchmark"},
                          temperatures=(1.0,) if sampled else (1.0, 6.0), shard_rows=SHARD_ROWS, chunk_rows=CHUNK_ROWS,
                          rows=rows, samples=width if sampled else 0)
    writer = LogitStoreWriter.create(location, meta)
    started = time.perf_counter()
    for shard in range(meta.n_shards("train")):
        lo, hi = writer.shard_range("train", shard)
        made = (sample_rows_from_logits(logits[lo:hi], np.arange(lo, hi), "train", width, 1.0, 0) if sampled
                else teacher_rows_from_logits(logits[lo:hi], width, meta.temperatures))
        writer.write_shard("train", shard, made)
    speed = n / (time.perf_counter() - started)
    writer.finish()
    return LogitStore.open(location), speed


def bytes_table(logits: torch.Tensor, tmp: str) -> dict[str, LogitStore]:
    stores = {}
    print(f"1. bytes per position ({len(logits):,} positions, V = {logits.shape[1]:,}, codec {DEFAULT_CODEC})")
    print(f"   {'rows':<22} {'B/pos':>7} {'distinct ids':>13} {'build+write pos/s':>18}")
    for rows, width in (("sampled", 12), ("sampled", 50), ("sampled", 100), ("topk", 16), ("topk", 64)):
        name = f"sampled N = {width}" if rows == "sampled" else f"top-{width} (T = 1, 6)"
        store, speed = write_store(f"{tmp}/{rows}{width}", logits, rows, width)
        stats = store.meta.stats
        distinct = f"{stats['distinct_ids']['train']['mean']:.1f}" if rows == "sampled" else "-"
        print(f"   {name:<22} {stats['bytes_per_position']:7.1f} {distinct:>13} {speed:18,.0f}", flush=True)
        stores[f"{rows}{width}"] = store
    return stores


def array_bytes(arrays: dict[str, np.ndarray], tmp: str) -> float:
    """Stored bytes per position of `arrays` ([P, w] sharded and chunked as a store, or 1-D ragged)."""
    group = zarr.open_group(tempfile.mkdtemp(dir=tmp), mode="w", zarr_format=3)
    total, positions = 0, None
    for name, values in arrays.items():
        values = np.ascontiguousarray(values)
        if values.ndim == 2:
            positions = len(values)
            chunks, shards = (CHUNK_ROWS, values.shape[1]), (SHARD_ROWS, values.shape[1])
        else:  # ragged: as many elements per chunk as 4,096 rows hold on average
            per_chunk = max(1, values.size * CHUNK_ROWS // max(positions or 1, 1))
            chunks, shards = (per_chunk,), (per_chunk * (SHARD_ROWS // CHUNK_ROWS),)
        array = group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=chunks, shards=shards,
                                   compressors=CODECS[DEFAULT_CODEC]() + [Crc32cCodec()], fill_value=0)
        array[...] = values
        total += array.nbytes_stored()
    return total / positions


def layouts(store: LogitStore, tmp: str) -> None:
    rows = store.read_rows("train", 0, store.positions("train"))
    counts = rows.counts.numpy()
    real = counts > 0
    ids = np.where(real, rows.ids.numpy(), 0)  # padding stored as id 0, count 0
    id_deltas = np.where(real, np.diff(ids, axis=1, prepend=0), 0)
    order = np.argsort(-counts * ids.shape[1] * 10**6 + ids, axis=1, kind="stable")  # by count, then id
    u16, u8 = np.uint16, np.uint8
    candidates = {
        "draw deltas [P, N] (stored)": {"d": store.array("train", "draw_deltas")[:]},
        "id deltas + counts [P, w]": {"i": id_deltas.astype(u16), "c": counts.astype(u8)},
        "ids ascending + counts [P, w]": {"i": ids.astype(u16), "c": counts.astype(u8)},
        "ids by count + counts [P, w]": {"i": np.take_along_axis(ids, order, 1).astype(u16),
                                         "c": np.take_along_axis(counts, order, 1).astype(u8)},
        "ragged: id deltas, counts, d": {"n": real.sum(1, keepdims=True).astype(u8),
                                         "i": id_deltas[real].astype(u16), "c": counts[real].astype(u8)},
    }
    print(f"2. layouts of sampled rows, N = {rows.samples} (data arrays only, {DEFAULT_CODEC}; w = {ids.shape[1]})")
    for name, arrays in candidates.items():
        print(f"   {name:<32} {array_bytes(arrays, tmp):7.1f} B/pos", flush=True)


def step_times(stores: dict[str, LogitStore], tokens: np.ndarray, vocab: int, steps: int, rounds: int) -> None:
    config, train = resolve("tiny-student")
    config.vocab_size, config.dropout = vocab, 0.0
    positions = stores["topk64"].positions("train")
    plan = WindowPlan(positions + 1, config.context, 8 * train.batch_size * config.context, seed=0)
    at_1 = DistillationSpec(temperature=1.0)
    modes = {"baseline": (DataObjective(), None), "top-64, T = 1": (SuperstillObjective(at_1), stores["topk64"]),
             "sampled N = 50, T = 1": (SuperstillObjective(at_1), stores["sampled50"])}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode, (objective, store) in modes.items():
            torch.manual_seed(1)
            source = (lambda lo, hi, s=store: s.read_rows("train", lo, hi)) if store else None
            stream = BatchStream(tokens[:positions + 1], plan, train.batch_size, row_source=source)
            times[mode].append(timed(GPT(config), objective, stream, steps, store is not None)[0])
    base = statistics.median(times["baseline"])
    print(f"3. student step, tiny-student (V = {vocab:,}, batch {train.batch_size}x{config.context}), {steps} steps "
          f"x {rounds} rounds, median")
    for mode, values in times.items():
        seconds = statistics.median(values)
        print(f"   {mode:<22} {seconds * 1000:8.1f} ms/step  {seconds / base:5.2f}x baseline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(REPO / "runs/demo/teacher"), help="a trained teacher")
    parser.add_argument("--tokens", default=str(REPO / "runs/demo/tokens"), help="its token store")
    parser.add_argument("--positions", type=int, default=SHARD_ROWS, help="training positions to store")
    parser.add_argument("--steps", type=int, default=8, help="timed student steps per mode and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the interleaved step timing")
    args = parser.parse_args()
    ids = TokenStore.open(args.tokens).read("train")
    positions = min(args.positions, ids.size - 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; teacher {args.checkpoint}")
    logits = teacher_logits(args.checkpoint, ids, positions)
    with tempfile.TemporaryDirectory() as tmp:
        stores = bytes_table(logits, tmp)
        layouts(stores["sampled50"], tmp)
        step_times(stores, ids, logits.shape[1], args.steps, args.rounds)


if __name__ == "__main__":
    main()
