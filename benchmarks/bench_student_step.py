"""Student step time: store-fed superstill vs the plain baseline vs online distillation, same model and batches.

For each shape: a frozen teacher (the paired teacher preset, random weights: cost, not quality, is measured)
fills a real on-disk logit store (top-64, T = 1 and 6) for the windows the steps will read; then, in one run,
the same student takes `--steps` optimizer steps three ways, reading batches through the real BatchStream:
  baseline   plain cross-entropy (no teacher rows read)
  store-fed  fused superstill loss, teacher rows streamed from the store by the background reader
  online     the teacher runs forward every step (the paper's implementation), full distribution
Ratios are to the baseline. "loader wait" is the time the step loop spent blocked on the reader.

    python benchmarks/bench_student_step.py [--steps 8] [--small-steps 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from pipeline.batching import BatchStream, WindowPlan
from pipeline.config import resolve
from pipeline.distillation import DistillationSpec
from pipeline.logit_store import LogitStore, LogitStoreMeta, LogitStoreWriter
from pipeline.model import GPT
from pipeline.objectives import DataObjective, SuperstillObjective
from pipeline.teacher_rows import teacher_rows_from_logits

SHAPES = [("tiny", "tiny-teacher", "tiny-student", 8000), ("paper-small", "paper-small-teacher", "paper-small-student", 25000)]


def build_store(location: str, teacher: GPT, ids: np.ndarray, context: int, shard_rows: int) -> LogitStore:
    meta = LogitStoreMeta(token_fingerprint="benchmark", vocab_size=teacher.config.vocab_size, k=64,
                          positions={"train": int(ids.size)}, context=context, stride=context,
                          teacher={"checkpoint_sha256": "random"}, shard_rows=shard_rows, chunk_rows=shard_rows // 8)
    writer = LogitStoreWriter.create(location, meta)
    with torch.inference_mode():
        for shard in range(meta.n_shards("train")):
            lo, hi = writer.shard_range("train", shard)
            windows = torch.from_numpy(ids[lo:hi].astype(np.int64)).view(-1, context)
            logits = torch.cat([teacher(w) for w in windows.split(16)]).view(-1, teacher.config.vocab_size)
            writer.write_shard("train", shard, teacher_rows_from_logits(logits, 64, (1.0, 6.0)))
    writer.finish()
    return LogitStore.open(location)


def adam(student: torch.nn.Module) -> torch.optim.Optimizer:
    """The paper's optimizer settings, as the training loop builds them."""
    return torch.optim.Adam(student.parameters(), lr=3e-4, betas=(0.9, 0.98), eps=1e-8)


def train_step(student: torch.nn.Module, objective, optimizer: torch.optim.Optimizer, batch) -> None:
    """One optimizer step on `batch` (epoch 1 of the objective's schedule)."""
    loss = objective(student, batch, 1).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def timed(student: GPT, objective, stream: BatchStream, steps: int, with_teacher: bool) -> tuple[float, float]:
    """(seconds per step, fraction of time waiting for data) over `steps` steps after one warm-up step."""
    optimizer = adam(student)
    batches = stream.epoch(1, 0, with_teacher)
    started, wait_before = None, 0.0
    for i, batch in enumerate(batches):
        if i == 1:
            started, wait_before = time.perf_counter(), stream.wait_seconds
        if i == steps + 1:
            break
        train_step(student, objective, optimizer, batch)
    elapsed = time.perf_counter() - started
    return elapsed / steps, (stream.wait_seconds - wait_before) / elapsed


def bench_shape(name: str, teacher_preset: str, student_preset: str, vocab: int, steps: int) -> None:
    teacher_config, _ = resolve(teacher_preset)
    student_config, train = resolve(student_preset)
    teacher_config.vocab_size = student_config.vocab_size = vocab
    teacher_config.dropout = student_config.dropout = 0.0  # identical work in every mode
    torch.manual_seed(0)
    teacher, context, batch = GPT(teacher_config).eval(), student_config.context, train.batch_size
    block = 8 * batch * context  # several blocks so the reader really streams
    ids = np.random.default_rng(0).integers(0, vocab, size=max(4 * block, (steps + 2) * batch * context * 2) + 1)
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(f"{tmp}/logits", teacher, ids[: ids.size - 1], context, shard_rows=block)
        plan = WindowPlan(ids.size, context, block, seed=0)
        results = {}
        modes = {"baseline": (DataObjective(), False),
                 "store-fed": (SuperstillObjective(DistillationSpec()), True),
                 "online": (SuperstillObjective(DistillationSpec(), teacher_model=teacher), False)}
        for mode, (objective, with_teacher) in modes.items():
            torch.manual_seed(1)
            student = GPT(student_config)
            stream = BatchStream(ids, plan, batch, row_source=lambda lo, hi: store.read_rows("train", lo, hi))
            results[mode] = timed(student, objective, stream, steps, with_teacher)
    base = results["baseline"][0]
    print(f"{name}: student {student_preset} ({GPT(student_config).num_parameters() / 1e6:.1f}M params), "
          f"teacher {teacher_preset}, vocab {vocab}, batch {batch}x{context}, {steps} steps each")
    for mode, (seconds, wait) in results.items():
        print(f"  {mode:<10} {seconds * 1000:9.1f} ms/step  {seconds / base:5.2f}x baseline  "
              f"{batch * context / seconds:9,.0f} tokens/s  loader wait {wait:.2%}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per mode at tiny shapes")
    parser.add_argument("--small-steps", type=int, default=2, help="timed steps per mode at paper-small shapes")
    parser.add_argument("--only", choices=[s[0] for s in SHAPES], default=None)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    for name, teacher, student, vocab in SHAPES:
        if args.only in (None, name):
            bench_shape(name, teacher, student, vocab, args.steps if name == "tiny" else args.small_steps)


if __name__ == "__main__":
    main()
