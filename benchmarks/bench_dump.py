"""dump-teacher throughput against a plain teacher forward, and the store's bytes per position.

On the Shakespeare corpus (first `--plays` plays, vocabulary `--vocab`): trains a tiny teacher briefly (so
its distributions, and hence compression, are realistic), then in one run times
  forward     the bare teacher forward over every position of the train split (same windows, same batches)
  dump        `pipeline dump-teacher` on the same split: forward + top-k + normalizers/tails + compression +
              CRC32C + sharded writes (the writes run on a background thread)
and prints their ratio (target >= 0.85), then the stored bytes per position at k = 64 and k = 128 against
the raw size (int32 ids + float16 values: 6 bytes per id). The paper-small teacher's shape (2 x 768,
random weights) is timed the same way on fewer positions. On CUDA it also prints model FLOPs utilization.

    python benchmarks/bench_dump.py [--plays 6] [--vocab 8000] [--train-steps 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.checkpoint import load_model, save
from pipeline.config import TrainConfig, resolve
from pipeline.model import GPT
from stages.dump_teacher import DumpTeacherConfig, run as dump
from stages.tokenize import TokenizeConfig, run as tokenize
from stages.train_teacher import TrainTeacherConfig, run as train_teacher

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "shakespeare"


@torch.inference_mode()
def plain_forward_seconds(model: GPT, ids: np.ndarray, batch_size: int, device: torch.device) -> float:
    context = model.config.context
    usable = ids.size // context * context
    windows = torch.from_numpy(ids[:usable].astype(np.int64)).view(-1, context)
    amp = torch.bfloat16 if device.type == "cuda" else None
    started = time.perf_counter()
    for batch in windows.split(batch_size):
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            model(batch.to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) * ids.size / usable


def compare(name: str, checkpoint: str, tokens: str, tmp: str, batch_size: int, device: torch.device, k: int,
            peak: float) -> dict:
    model, _ = load_model(checkpoint)
    model = model.to(device)
    from pipeline.token_store import TokenStore

    ids = TokenStore.open(tokens).read("train")
    plain_forward_seconds(model, ids[: 4 * model.config.context * batch_size], batch_size, device)  # warm-up
    forward = plain_forward_seconds(model, ids, batch_size, device)
    result = dump(DumpTeacherConfig.flat(checkpoint=checkpoint, tokens=tokens, out=f"{tmp}/{name}-k{k}", top_k=k,
                                    split="train", batch_size=batch_size, device=str(device), force=True))
    rate = ids.size / result["seconds"]
    line = (f"{name:<22} k={k:<4} {ids.size:>9,} positions  forward {ids.size / forward:>9,.0f} pos/s  "
            f"dump {rate:>9,.0f} pos/s  ratio {rate / (ids.size / forward):.2f}  "
            f"{result['stats']['bytes_per_position']:6.1f} B/pos (raw {6 * k} B/pos)")
    if device.type == "cuda":
        line += f"  dump MFU {model.flops_per_token() * rate / (peak * 1e12):.1%}"
    print(line, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plays", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        files = sorted(CORPUS.glob("*.txt"))[: args.plays]
        tokenize(TokenizeConfig(corpus=[str(f) for f in files], out=f"{tmp}/tokens", vocab_size=args.vocab,
                                workers=1, progress=False))
        train_teacher(TrainTeacherConfig(tokens=f"{tmp}/tokens", out=f"{tmp}/teacher", preset="tiny-teacher",
                                         overrides={"train": {"epochs": 1, "max_steps_per_epoch": args.train_steps,
                                                              "eval_max_tokens": 4096}}))
        for k in (64, 128):
            compare("tiny-teacher (trained)", f"{tmp}/teacher", f"{tmp}/tokens", tmp, args.batch_size, device, k,
                    args.peak_tflops)
        small_tokens = tokenize(TokenizeConfig(corpus=[str(files[-1])], out=f"{tmp}/small-tokens",
                                               vocab_size=args.vocab, val_fraction=0.0, workers=1, progress=False))
        model_config, _ = resolve("paper-small-teacher")
        model_config.vocab_size, model_config.dropout = small_tokens.vocab_size, 0.0
        big = GPT(model_config)
        save(f"{tmp}/paper-small.pt", model=big, optimizer=None, scheduler=None, model_config=model_config,
             train_config=TrainConfig(), run={}, position={})
        compare("paper-small-teacher", f"{tmp}/paper-small.pt", f"{tmp}/small-tokens", tmp, 16, device, 64,
                args.peak_tflops)


if __name__ == "__main__":
    main()
