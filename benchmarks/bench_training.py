"""Training throughput (tokens/s) of the one training loop's step for the tiny and paper-small presets.

On CPU: fp32 steps. On CUDA (when present): bf16 autocast steps of paper-small-student and its model FLOPs
utilization, MFU = 6 * N_matmul_params-equivalent FLOPs per token (model.flops_per_token() * 3) * tokens/s
/ peak bf16 FLOP/s (--peak-tflops, default 989 for an H100 SXM dense).

    python benchmarks/bench_training.py [--vocab 8000] [--steps 5] [--peak-tflops 989] [--compile]
"""

from __future__ import annotations

import argparse
import time

import torch

from pipeline.config import resolve
from pipeline.model import GPT
from pipeline.objectives import DataObjective
from pipeline.batching import Batch


def steps_per_second(preset: str, vocab: int, steps: int, device: torch.device, compile_model: bool) -> tuple[float, GPT, int]:
    model_config, train_config = resolve(preset)
    model_config.vocab_size = vocab
    torch.manual_seed(0)
    model = GPT(model_config).to(device)
    forward = torch.compile(model) if compile_model else model
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, betas=(0.9, 0.98), eps=1e-8)
    batch_size, context = train_config.batch_size, model_config.context
    ids = torch.randint(0, vocab, (batch_size, context + 1), device=device)
    batch = Batch(inputs=ids[:, :-1], targets=ids[:, 1:], starts=None)
    amp = torch.bfloat16 if device.type == "cuda" else None
    objective = DataObjective()

    def step():
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = objective(forward, batch, 1).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(2):  # warm-up (and compilation)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - started), model, batch_size * context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=8000, help="vocabulary of the tiny presets")
    parser.add_argument("--small-vocab", type=int, default=25000, help="vocabulary of the paper-small presets")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--small-steps", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    runs = [("tiny-teacher", args.vocab, args.steps), ("tiny-student", args.vocab, args.steps),
            ("paper-small-teacher", args.small_vocab, args.small_steps),
            ("paper-small-student", args.small_vocab, args.small_steps)]
    for preset, vocab, steps in runs:
        rate, model, tokens = steps_per_second(preset, vocab, steps, device, args.compile)
        line = (f"{preset:<22} vocab {vocab:>6}  {model.num_parameters() / 1e6:7.2f}M params  "
                f"{rate * tokens:>10,.0f} tokens/s  ({1000 / rate:8.1f} ms/step)")
        if device.type == "cuda":
            flops = 3 * model.flops_per_token() * rate * tokens
            line += f"  MFU {flops / (args.peak_tflops * 1e12):.1%}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
