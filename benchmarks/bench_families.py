"""Store-fed student step against the same architecture's baseline step, for every shipped model family.

    python benchmarks/bench_families.py [--rounds 3] [--steps 2] [--small-rounds 3] [--small-steps 1]
                                        [--small-batch 4] [--only tiny|paper-small]

Families, each at a tiny and a paper-small shape (built with pipeline/model_families.py build_model):
  gpt            tiny-student / paper-small-student
  hf:llama       tiny-llama-student / paper-small-llama-student
  hf:rwkv        tiny-rwkv-student / paper-small-rwkv-student
  factory:lstm   examples/lstm_model.py:build, width 128 x 2 layers / width 768 x 4 layers
Per shape one real on-disk store (top-64, T = 1 and 6) is filled by a random tiny-teacher-shaped GPT at the
shape's context and vocabulary: the student's cost depends on the rows' shape, not on who wrote them.
Per family two identically initialized students, one plain cross-entropy (baseline), one fused superstill
loss with rows streamed by the real BatchStream (store-fed), see the same batches in the same order; after
one warm-up step each, they alternate slots of `steps` steps (order flipped every round) for `rounds` rounds.
The ratio is the median over rounds of each store-fed slot over its baseline slot; ms/step and tokens/s
are medians. Dropout is off in every family (identical work in both modes, as bench_student_step.py).
Paper-small shapes run a smaller batch than their preset (`--small-batch` windows of 256) so the script
ends in minutes on 2 CPU cores: the loss's share of a step is per token, so the ratio barely depends on it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # pipeline/ and examples/ (the factory family's module) from any directory

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.batching import BatchStream, WindowPlan  # noqa: E402
from pipeline.config import ModelConfig, resolve  # noqa: E402
from pipeline.distillation import DistillationSpec  # noqa: E402
from pipeline.model import GPT  # noqa: E402
from pipeline.model_families import build_model  # noqa: E402
from pipeline.objectives import DataObjective, SuperstillObjective  # noqa: E402

from bench_student_step import adam, build_store, train_step  # noqa: E402 (the student benchmarks' shared step)

LSTM = "examples.lstm_model:build"
SHAPES = {"tiny": 8000, "paper-small": 25000}
"""Vocabulary per shape, as bench_student_step.py and bench_training.py."""
FAMILIES = [  # (shape, label, preset, model overrides: dropout off, the LSTM's size)
    ("tiny", "gpt", "tiny-student", dict(dropout=0.0)),
    ("tiny", "hf:llama", "tiny-llama-student", dict(options=dict(attention_dropout=0.0))),
    ("tiny", "hf:rwkv", "tiny-rwkv-student", {}),
    ("tiny", "factory:lstm", "tiny-student", dict(family="factory", factory=LSTM,
                                                  options=dict(width=128, layers=2, dropout=0.0))),
    ("paper-small", "gpt", "paper-small-student", dict(dropout=0.0)),
    ("paper-small", "hf:llama", "paper-small-llama-student", dict(options=dict(attention_dropout=0.0))),
    ("paper-small", "hf:rwkv", "paper-small-rwkv-student", {}),
    ("paper-small", "factory:lstm", "paper-small-student", dict(family="factory", factory=LSTM,
                                                                options=dict(width=768, layers=4, dropout=0.0))),
]
MODES = {"baseline": (DataObjective(), False), "store-fed": (SuperstillObjective(DistillationSpec()), True)}


def spec_of(preset: str, overrides: dict, vocab: int) -> ModelConfig:
    spec, _ = resolve(preset, {"model": overrides})
    spec.vocab_size = vocab
    return spec


def shape_store(tmp: str, context: int, vocab: int, batch: int, windows_needed: int):
    """(token ids, window plan, open store) for one shape, enough windows for one pass of every stream."""
    teacher_spec, _ = resolve("tiny-teacher", {"model": dict(context=context, dropout=0.0)})
    teacher_spec.vocab_size = vocab
    torch.manual_seed(0)
    block = 8 * batch * context  # several blocks so the reader really streams
    ids = np.random.default_rng(0).integers(0, vocab, size=max(4 * block, 2 * windows_needed * context) + 1)
    store = build_store(f"{tmp}/logits-{context}-{vocab}", GPT(teacher_spec).eval(), ids[:-1], context, block)
    return ids, WindowPlan(ids.size, context, block, seed=0), store


def bench_family(spec: ModelConfig, ids, plan, store, batch: int, steps: int, rounds: int) -> dict:
    """Median ms/step per mode and the median store-fed/baseline ratio over interleaved slots."""
    students, optimizers, batches = {}, {}, {}
    for mode, (objective, with_teacher) in MODES.items():
        torch.manual_seed(1)  # both students start from the same weights
        students[mode] = build_model(spec)
        optimizers[mode] = adam(students[mode])
        stream = BatchStream(ids, plan, batch, row_source=lambda lo, hi: store.read_rows("train", lo, hi))
        batches[mode] = stream.epoch(1, 0, with_teacher)
        train_step(students[mode], objective, optimizers[mode], next(batches[mode]))  # warm-up, untimed
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_ in range(rounds):
        for mode in list(MODES)[:: 1 if round_ % 2 == 0 else -1]:
            started = time.perf_counter()
            for _ in range(steps):  # the batch's wait for the reader counts: it is part of a real step
                train_step(students[mode], MODES[mode][0], optimizers[mode], next(batches[mode]))
            times[mode].append((time.perf_counter() - started) / steps)
    for generator in batches.values():
        generator.close()  # stops the background reader
    ratio = statistics.median(s / b for s, b in zip(times["store-fed"], times["baseline"]))
    return {"params": students["baseline"].num_parameters(), "ratio": ratio,
            **{mode: statistics.median(values) for mode, values in times.items()}}


def bench_shape(shape: str, batch: int | None, steps: int, rounds: int) -> None:
    vocab, rows = SHAPES[shape], [f for f in FAMILIES if f[0] == shape]
    context, preset_batch = resolve(rows[0][2])[0].context, resolve(rows[0][2])[1].batch_size
    batch = batch or preset_batch
    tokens = batch * context
    print(f"\n{shape}: vocab {vocab:,}, batch {batch}x{context} ({tokens:,} tokens/step), top-64 rows, "
          f"{rounds} rounds x {steps} step(s) per mode after 1 warm-up, medians", flush=True)
    print(f"| family | student | params | baseline ms/step | store-fed ms/step | store-fed / baseline "
          f"| baseline tokens/s | store-fed tokens/s |\n|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        ids, plan, store = shape_store(tmp, context, vocab, batch, (1 + rounds * steps) * batch)
        for _, label, preset, overrides in rows:
            name = f"{preset} + {overrides['factory']}" if "factory" in overrides else preset
            if "factory" in overrides:
                name += " " + ",".join(f"{k}={v}" for k, v in overrides["options"].items() if k != "dropout")
            result = bench_family(spec_of(preset, overrides, vocab), ids, plan, store, batch, steps, rounds)
            base, fed = result["baseline"], result["store-fed"]
            print(f"| {label} | {name} | {result['params'] / 1e6:.2f}M | {base * 1000:,.0f} | {fed * 1000:,.0f} | "
                  f"**{result['ratio']:.2f}x** | {tokens / base:,.0f} | {tokens / fed:,.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds at tiny shapes")
    parser.add_argument("--steps", type=int, default=2, help="steps per mode per round at tiny shapes")
    parser.add_argument("--small-rounds", type=int, default=3, help="interleaved rounds at paper-small shapes")
    parser.add_argument("--small-steps", type=int, default=1, help="steps per mode per round at paper-small shapes")
    parser.add_argument("--small-batch", type=int, default=4, help="windows per step at paper-small shapes "
                                                                   "(0: the preset's 16)")
    parser.add_argument("--only", choices=list(SHAPES), default=None)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    started = time.perf_counter()
    if args.only in (None, "tiny"):
        bench_shape("tiny", None, args.steps, args.rounds)
    if args.only in (None, "paper-small"):
        bench_shape("paper-small", args.small_batch or None, args.small_steps, args.small_rounds)
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
