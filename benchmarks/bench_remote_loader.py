"""Remote stores: loader wait during student training, and dump throughput, local disk vs a local S3 server.

Loader wait: the same student (tiny-student shape, V = 8,000, batch 32 x 64) takes the same steps of the
fused superstill loss through the real BatchStream, its teacher rows read by the background reader from
one logit store (top-64, T = 1 and 6, default sharding: 65,536-row shards, 4,096-row chunks) placed
  local      on local disk
  s3         on moto's S3 server on 127.0.0.1 (s3fs through fsspec, as a user's s3:// store)
  s3+20ms    the same server with 20 ms added before every S3 request (s3fs's `_call_s3` wrapped)
and prints the share of step time the step loop spent blocked on the reader (target < 2%). "reader
alone" is the same stream with no training step: the positions/s the reader can supply.

Dump: `pipeline dump-teacher` of a random tiny teacher (tiny-teacher shape, V = 8,000) over a synthetic
token store to local disk and to the S3 server: positions/s. The store's rows are random (incompressible
ids), so it is bigger than a real teacher's and the transfer is a little pessimistic.

    python benchmarks/bench_remote_loader.py [--steps 40] [--blocks 12] [--dump-positions 131072]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import tempfile
import time
from typing import Callable

import numpy as np
import torch

from pipeline.batching import BatchStream, WindowPlan
from pipeline.config import resolve
from pipeline.distillation import DistillationSpec
from pipeline.logit_store import LogitStore, LogitStoreMeta, LogitStoreWriter
from pipeline.model import GPT
from pipeline.objectives import SuperstillObjective
from pipeline.teacher_rows import TeacherRows

VOCAB, K, TEMPERATURES = 8000, 64, (1.0, 6.0)
CONTEXT, BATCH = 64, 32  # the tiny-student preset's
REPEATS = 2  # dumps per location; the fastest counts
FAST_STEP_S = 0.02  # a step that leaves the CPU to the reader, as an accelerator's does: 102,400 positions/s


@contextlib.contextmanager
def local_s3():
    """moto's S3 server on a free loopback port; the AWS variables point s3fs at it (fake credentials)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    try:
        import fsspec

        fsspec.filesystem("s3").mkdir("bench")
        yield "s3://bench"
    finally:
        server.stop()


@contextlib.contextmanager
def request_latency(seconds: float):
    """Every S3 request (s3fs `_call_s3`: GET, PUT, LIST, HEAD) waits `seconds` first, as over a far network."""
    import s3fs

    real = s3fs.S3FileSystem._call_s3

    async def delayed(self, *args, **kwargs):
        await asyncio.sleep(seconds)
        return await real(self, *args, **kwargs)

    s3fs.S3FileSystem._call_s3 = delayed
    try:
        yield
    finally:
        s3fs.S3FileSystem._call_s3 = real


@contextlib.contextmanager
def without_read_ahead():
    """The reader as it was before read-ahead (for the before/after figure): one block at a time, read when a
    batch first needs it."""
    import concurrent.futures

    from pipeline import batching

    real = batching._BlockRows.__init__

    def init(self, *args) -> None:
        real(self, *args)
        self.pool.shutdown()
        self.group_blocks, self.pool = {}, concurrent.futures.ThreadPoolExecutor(1)

    batching._BlockRows.__init__ = init
    try:
        yield
    finally:
        batching._BlockRows.__init__ = real


def synthetic_rows(n: int, rng: np.random.Generator) -> TeacherRows:
    """n rows of the right shapes and value ranges (descending scores from 0); the loader cost is what counts."""
    gaps = rng.exponential(0.3, size=(n, K - 1)).cumsum(axis=1)  # [n, K-1] ascending
    scores = np.concatenate([np.zeros((n, 1)), -gaps], axis=1).astype(np.float16)  # 0, then descending
    ids = rng.integers(0, VOCAB, size=(n, K))
    return TeacherRows.from_numpy(ids, scores, rng.uniform(1, 8, (n, 2)), rng.uniform(0, 1, (n, 2)), TEMPERATURES, VOCAB)


def build_store(location: str, positions: int) -> None:
    meta = LogitStoreMeta(token_fingerprint="benchmark", vocab_size=VOCAB, k=K, positions={"train": positions},
                          context=64, stride=64, teacher={"checkpoint_sha256": "synthetic"}, temperatures=TEMPERATURES)
    writer = LogitStoreWriter.create(location, meta)
    rng = np.random.default_rng(0)
    for shard in range(meta.n_shards("train")):
        lo, hi = writer.shard_range("train", shard)
        writer.write_shard("train", shard, synthetic_rows(hi - lo, rng))
    writer.finish()


def upload(local: str, url: str) -> float:
    """Copy a local store to an s3:// prefix; seconds taken."""
    import fsspec

    started = time.perf_counter()
    fs, root = fsspec.core.url_to_fs(url)
    fs.put(local, root, recursive=True)
    return time.perf_counter() - started


def student_step() -> Callable[[object], None]:
    """One optimizer step of the fused superstill loss on a tiny-student-shaped model (CPU)."""
    config, _ = resolve("tiny-student")
    config.vocab_size, config.dropout = VOCAB, 0.0
    torch.manual_seed(1)
    student = GPT(config)
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-4)
    objective = SuperstillObjective(DistillationSpec(temperature=6.0))

    def step(batch) -> None:
        loss = objective(student, batch, 1).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def stream_for(location: str, ids: np.ndarray) -> BatchStream:
    """The training reader over the store at `location`: windows of 64, batches of 32, blocks of 65,536."""
    store = LogitStore.open(location)
    return BatchStream(ids, WindowPlan(ids.size, CONTEXT, 65536, seed=0), BATCH,
                       row_source=lambda lo, hi: store.read_rows("train", lo, hi))


def loader_wait(location: str, ids: np.ndarray, steps: int, step: Callable[[object], None]) -> tuple[float, float]:
    """(seconds per step, share of time blocked on the reader) over `steps` steps after one warm-up step."""
    stream = stream_for(location, ids)
    started, waited, done = None, 0.0, 0
    for i, batch in enumerate(stream.epoch(1)):
        if i == 1:
            started, waited = time.perf_counter(), stream.wait_seconds
        if i == steps + 1:
            break
        step(batch)
        done = i
    elapsed = time.perf_counter() - started
    return elapsed / done, (stream.wait_seconds - waited) / elapsed


def reader_supply(location: str, ids: np.ndarray) -> float:
    """Positions/s the reader delivers with nothing else running: one whole epoch, first read included."""
    stream = stream_for(location, ids)
    started, batches = time.perf_counter(), 0
    for _ in stream.epoch(1):
        batches += 1
    return batches * BATCH * CONTEXT / (time.perf_counter() - started)


def dump_throughput(root: str, bucket: str, positions: int) -> None:
    """Dump a random tiny teacher over `positions` synthetic tokens to local disk and to S3; positions/s each."""
    from pipeline.checkpoint import save
    from pipeline.config import TrainConfig
    from pipeline.token_store import SPECIAL_TOKENS, TokenStoreMeta, write_token_store
    from stages.dump_teacher import DumpTeacherConfig, run

    vocab = list(SPECIAL_TOKENS) + [f"w{i}" for i in range(VOCAB - len(SPECIAL_TOKENS))]
    ids = np.random.default_rng(1).integers(2, VOCAB, positions + 4096)
    write_token_store(f"{root}/tokens", {"train": ids[:positions], "val": ids[positions:]}, vocab,
                      TokenStoreMeta(vocab_size=VOCAB, dtype="", tokenizer={"benchmark": "synthetic"}, counts={},
                                     manifest=[]))
    config, _ = resolve("tiny-teacher")
    config.vocab_size = VOCAB
    torch.manual_seed(0)
    save(f"{root}/teacher.pt", model=GPT(config), optimizer=None, scheduler=None, model_config=config,
         train_config=TrainConfig(), run={}, position={})
    print(f"dump: tiny-teacher shape (random weights), {positions + 4096:,} positions, top-{K}, T = 1 and 6, "
          f"best of {REPEATS} (a shared machine's other load only slows a run down)")
    for name, out in (("local", f"{root}/dump"), ("s3", f"{bucket}/dump"), ("s3+20ms", f"{bucket}/dump-slow")):
        best = None
        for repeat in range(REPEATS):
            with request_latency(0.02) if name == "s3+20ms" else contextlib.nullcontext():
                started = time.perf_counter()
                result = run(DumpTeacherConfig.flat(checkpoint=f"{root}/teacher.pt", tokens=f"{root}/tokens",
                                                    out=f"{out}-{repeat}", device="cpu", top_k=K,
                                                    temperatures=list(TEMPERATURES)))
                seconds = time.perf_counter() - started
            best = seconds if best is None else min(best, seconds)
        print(f"  {name:<9} {result['positions_computed'] / best:9,.0f} positions/s ({best:.1f} s in all, "
              f"{result['stats']['bytes_per_position']:.0f} bytes/position)", flush=True)


def loader_figures(root: str, bucket: str, ids: np.ndarray, positions: int, steps: int) -> None:
    """Loader wait per store location (see the module docstring), read-ahead on and off at 20 ms."""
    build_store(f"{root}/logits", positions)
    seconds = upload(f"{root}/logits", f"{bucket}/logits")
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(f"{root}/logits") for f in files)
    print(f"store: {positions:,} positions, {size / 1e6:.0f} MB, uploaded to the S3 server in {seconds:.1f} s")
    print(f"loader: batch {BATCH} x {CONTEXT}, V = {VOCAB}, blocks of 65,536 positions; 'student': {steps} "
          f"tiny-student steps on this CPU; 'fast step': a whole epoch of {FAST_STEP_S * 1000:.0f} ms steps that "
          f"leave the CPU to the reader (an accelerator's step)")
    train = student_step()
    cases = [("local", f"{root}/logits", 0.0, False), ("s3", f"{bucket}/logits", 0.0, False),
             ("s3+20ms", f"{bucket}/logits", 0.02, False), ("s3+20ms, no read-ahead", f"{bucket}/logits", 0.02, True)]
    for name, location, delay, old_reader in cases:
        with request_latency(delay) if delay else contextlib.nullcontext(), \
                without_read_ahead() if old_reader else contextlib.nullcontext():
            per_step, wait = loader_wait(location, ids, steps, train)
            _, fast_wait = loader_wait(location, ids, len(ids), lambda batch: time.sleep(FAST_STEP_S))
            supply = reader_supply(location, ids)
        print(f"  {name:<22} student {per_step * 1000:6.1f} ms/step, loader wait {wait:6.2%} | fast step: loader "
              f"wait {fast_wait:6.2%} | reader alone {supply:9,.0f} positions/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed tiny-student steps per store location")
    parser.add_argument("--blocks", type=int, default=12, help="65,536-position blocks (= shards) in the store")
    parser.add_argument("--dump-positions", type=int, default=131072, help="train positions of the dump benchmark")
    parser.add_argument("--only", choices=["loader", "dump"], default=None)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    positions = args.blocks * 65536
    ids = np.random.default_rng(0).integers(0, VOCAB, positions + 1)
    with tempfile.TemporaryDirectory() as root, local_s3() as bucket:
        if args.only != "dump":
            loader_figures(root, bucket, ids, positions, args.steps)
        if args.only != "loader":
            dump_throughput(root, bucket, args.dump_positions)


if __name__ == "__main__":
    main()
