"""How far a bf16 dump's rows are from a float32 dump's: the figures behind `validate`'s tolerances.

On the Shakespeare corpus (first `--plays` plays, vocabulary `--vocab`) it trains a teacher briefly (a
trained teacher's logits spread wider than random weights', which is what makes rounding matter), then
computes the logits of `--positions` val positions three ways on this machine's CPU:

  fp32                     everything in float32 (the reference)
  bf16-autocast-fp32-head  the trunk under bf16 autocast, final LayerNorm + head + normalizers in float32
                           (what `dump-teacher --precision bf16` does now)
  bf16-autocast            the whole forward, head included, under bf16 autocast (CUDA dumps before the
                           store recorded its precision)

and prints, for each bf16 variant against fp32: the spread of the logit perturbation
max_i(dz_i) - min_i(dz_i) over the full vocabulary (it bounds |d log p| at any T by spread / T), the
largest |d log p| over the stored top-k ids at each listed T, the share of positions whose top-k set
changed, and the largest |d tail mass|. CUDA's bf16 matmuls round like the CPU's (bf16 inputs, float32
accumulation), so the CPU stands in for it.

    python benchmarks/bench_dump_precision.py [--plays 4] [--vocab 8000] [--epochs 8] [--layers 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.checkpoint import load_model
from pipeline.dumping import head_fp32
from pipeline.teacher_rows import teacher_rows_from_logits
from pipeline.token_store import TokenStore
from stages.tokenize import TokenizeConfig, run as tokenize
from stages.train_teacher import TrainTeacherConfig, run as train_teacher

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "shakespeare"
TEMPERATURES = (1.0, 6.0)


@torch.inference_mode()
def logits_three_ways(model, windows: torch.Tensor) -> dict[str, torch.Tensor]:
    """{variant: logits [n, V] float32} for windows [B, C] (every position of every window)."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    with autocast:
        trunk = model.hidden(windows)
        everything = model(windows).float()
    flat = lambda z: z.reshape(-1, z.shape[-1])
    return {"fp32": flat(model(windows)), "bf16-autocast-fp32-head": flat(head_fp32(model, trunk)),
            "bf16-autocast": flat(everything)}


def compare(reference: torch.Tensor, other: torch.Tensor, k: int) -> dict[str, float]:
    dz = (other - reference).double()
    figures = {"spread": float((dz.max(1).values - dz.min(1).values).max())}
    ref_rows = teacher_rows_from_logits(reference, k, TEMPERATURES)
    rows = teacher_rows_from_logits(other, k, TEMPERATURES)
    same = (ref_rows.ids.sort(1).values == rows.ids.sort(1).values).all(1)
    figures["topk_changed"] = float(1 - same.double().mean())
    for t in TEMPERATURES:
        # d log p at the reference's top-k ids, from the dense log-softmax of both (no float16 in the way)
        ref_logp = torch.log_softmax(reference.double() / t, 1).gather(1, ref_rows.ids)
        logp = torch.log_softmax(other.double() / t, 1).gather(1, ref_rows.ids)
        figures[f"logp_T{t:g}"] = float((logp - ref_logp).abs().max())
        j = ref_rows.column(t)
        figures[f"tail_T{t:g}"] = float((rows.tail_mass[:, j] - ref_rows.tail_mass[:, j]).abs().max())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plays", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--preset", default="tiny-teacher")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=300, help="at most this many steps per epoch")
    parser.add_argument("--positions", type=int, default=4096)
    parser.add_argument("--top-k", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        files = sorted(CORPUS.glob("*.txt"))[: args.plays]
        tokenize(TokenizeConfig(corpus=[str(f) for f in files], out=f"{tmp}/tokens", vocab_size=args.vocab,
                                workers=1, progress=False))
        train_teacher(TrainTeacherConfig(tokens=f"{tmp}/tokens", out=f"{tmp}/teacher", preset=args.preset,
                                         overrides={"model": {"n_layer": args.layers},
                                                    "train": {"epochs": args.epochs, "max_steps_per_epoch": args.train_steps,
                                                              "eval_max_tokens": 4096}}))
        model, _ = load_model(f"{tmp}/teacher")
        ids = TokenStore.open(f"{tmp}/tokens").read("val")
        context = model.config.context
        n = min(args.positions, ids.size) // context
        windows = torch.from_numpy(ids[: n * context].astype(np.int64)).view(n, context)
        print(f"teacher {args.preset} ({model.config.n_layer} layers, d_model {model.config.d_model}, "
              f"V {model.config.vocab_size:,}) after {args.epochs} epochs; {n * context:,} val positions, "
              f"k = {args.top_k}, torch {torch.__version__}")
        results: dict[str, list[dict[str, float]]] = {"bf16-autocast-fp32-head": [], "bf16-autocast": []}
        for start in range(0, n, 8):  # 8 windows at a time keeps [n, V] buffers small
            variants = logits_three_ways(model, windows[start:start + 8])
            for name, parts in results.items():
                parts.append(compare(variants["fp32"], variants[name], args.top_k))
        for name, parts in results.items():
            worst = {key: max(p[key] for p in parts) for key in parts[0]}
            worst["topk_changed"] = float(np.mean([p["topk_changed"] for p in parts]))
            print(f"{name:<24} spread of dz max {worst['spread']:.4f}; |d log p| max "
                  + ", ".join(f"T={t:g} {worst[f'logp_T{t:g}']:.4f}" for t in TEMPERATURES)
                  + f"; |d tail| max " + ", ".join(f"T={t:g} {worst[f'tail_T{t:g}']:.4f}" for t in TEMPERATURES)
                  + f"; top-{args.top_k} set changed at {worst['topk_changed']:.1%} of positions")


if __name__ == "__main__":
    main()
