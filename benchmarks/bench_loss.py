"""How much the superstill loss costs next to plain cross-entropy, alone and in a head's training step.

Prints, per shape, the best and the median time over a few rounds (ratios from the same run, variants
interleaved so background load hits them alike) of forward+backward of:
  (a) F.cross_entropy on [N, V] logits (the baseline),
  (b) the fused superstill loss (pipeline.losses.superstill_loss, bucket tail),
  (c) a naive superstill loss through autograd (log_softmax at T over V, gather k, masked logsumexp for
      the tail, plus cross-entropy),
first on the logits alone, then as a whole step with the output head (hidden [N, d] @ W [d, V]), plus
the peak extra resident memory of each step (sampled from /proc/self/statm; torch allocations are
invisible to tracemalloc), and the share of (b) that its backward takes: it always scales the saved
[N, V] gradient by grad_output in place, since testing grad_output == 1 would be a host-device sync on
CUDA. Interleaving matters: this machine's 2 cores are shared, and a busy neighbour slows whatever runs
at that moment. Also prints the largest difference between (b) and (c) as a sanity check.

    python benchmarks/bench_loss.py                       # tiny, paper-small V=25k and V=50k
    python benchmarks/bench_loss.py --shapes tiny --reps 9
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import threading
import time

import torch
import torch.nn.functional as F

from pipeline import losses

SHAPES = {  # name: (N = batch * context, d_model, V)
    "tiny": (32 * 64, 128, 12_000),
    "paper25k": (16 * 256, 768, 25_000),
    "paper50k": (16 * 256, 768, 50_000),
}


def naive_superstill(logits, targets, ids, logp, tail, temperature, w_teacher=0.6, w_data=0.4):
    """The obvious autograd version (bucket tail); several dense [N, V] temporaries and backward passes."""
    log_q = F.log_softmax(logits / temperature, dim=1)                    # [N, V]
    log_q_tail = log_q.scatter(1, ids, -math.inf).logsumexp(1)            # [N] student mass off the top-k
    l_t = (-(logp.exp() * log_q.gather(1, ids)).sum(1) - tail * log_q_tail).mean()
    return w_teacher * temperature ** 2 * l_t + w_data * F.cross_entropy(logits, targets)


def make_batch(n, d, vocab, k, temperature, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=gen)
    weight = (torch.randn(d, vocab, generator=gen) / math.sqrt(d)).requires_grad_()
    targets = torch.randint(0, vocab, (n,), generator=gen)
    teacher = torch.randn(n, vocab, generator=gen) * 2                     # stand-in teacher logits
    log_p = F.log_softmax(teacher / temperature, dim=1)
    logp, ids = log_p.topk(k, dim=1)
    tail = log_p.exp().scatter_(1, ids, 0.0).sum(1)
    return hidden, weight, targets, ids, logp, tail


def loss_fns(targets, ids, logp, tail, temperature):
    return {
        "a cross_entropy": lambda z: F.cross_entropy(z, targets),
        "b fused superstill": lambda z: losses.superstill_loss(z, targets, ids, logp, tail,
                                                                temperature=temperature).loss,
        "c naive superstill": lambda z: naive_superstill(z, targets, ids, logp, tail, temperature),
    }


class PeakRss:
    """Peak resident memory above the starting level while the block runs, sampled every millisecond."""

    def __enter__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.extra_mb = (self.peak - self.start) / 2**20

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)


def timed(runs: dict, reps: int, warmup: bool = True) -> dict:
    """(best, median) wall time of each callable over `reps` rounds, interleaved (after one warmup each)."""
    for run in runs.values() if warmup else ():
        run()
    times = {name: [] for name in runs}
    for _ in range(reps):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: (min(t), statistics.median(t)) for name, t in times.items()}


def bench_shape(name, n, d, vocab, k, temperature, reps):
    hidden, weight, targets, ids, logp, tail = make_batch(n, d, vocab, k, temperature)
    fns = loss_fns(targets, ids, logp, tail, temperature)
    logits = (hidden @ weight).detach().requires_grad_()

    def loss_only(fn):
        def run():
            logits.grad = None
            fn(logits).backward()
        return run

    def head_step(fn):
        def run():
            weight.grad = None
            fn(hidden @ weight).backward()
        return run

    step_reps = max(2, reps // 2)
    print(f"\n{name}: N={n} d={d} V={vocab} k={k} T={temperature}; {reps} rounds of the loss, {step_reps} of "
          f"the step; {torch.get_num_threads()} threads; chunks {losses.CHUNK_BYTES / 2**20:g} MB; "
          f"load average {os.getloadavg()[0]:.1f}")
    check_agreement(fns, logits)
    loss_t = timed({key: loss_only(fn) for key, fn in fns.items()}, reps)
    peak_mb = {}
    for key, fn in fns.items():                        # also the head steps' warmup
        with PeakRss() as mem:
            head_step(fn)()
        peak_mb[key] = mem.extra_mb
    step_t = timed({key: head_step(fn) for key, fn in fns.items()}, step_reps, warmup=False)
    print(f"  {'ms: best (median)':22s} {'loss fwd+bwd':>17s} {'ratio':>11s} {'head step':>17s} {'ratio':>11s}"
          f" {'peak extra RSS':>15s}")
    for key in fns:
        print(f"  {key:22s} {_cell(loss_t, key)} {_cell(step_t, key)} {peak_mb[key]:11.0f} MB")
    print_scale_cost(logits, loss_t["b fused superstill"], reps)
    print(f"  (load average now {os.getloadavg()[0]:.1f})")


def print_scale_cost(logits, fused_times, reps):
    """The part of the fused loss's fwd+bwd that is its backward's in-place multiply by grad_output."""
    grad, grad_output = torch.empty_like(logits).fill_(1e-4), torch.ones(())
    (best, median), = timed({"scale": lambda: grad.mul_(grad_output)}, reps).values()
    print(f"  of (b): backward's scaling pass {best * 1e3:.0f} ({median * 1e3:.0f}) ms, "
          f"{best / fused_times[0]:.0%} ({median / fused_times[1]:.0%})")


def _cell(times: dict, key: str) -> str:
    """'best (median)' in ms, then the same as ratios to cross-entropy's."""
    (best, median), (base_best, base_median) = times[key], times["a cross_entropy"]
    return f"{best * 1e3:7.0f} ({median * 1e3:6.0f}) {best / base_best:5.2f} ({median / base_median:4.2f})"


def check_agreement(fns, logits):
    """Fused and naive agree (loss and gradient) on this very batch."""
    results = []
    for key in ("b fused superstill", "c naive superstill"):
        logits.grad = None
        loss = fns[key](logits)
        loss.backward()
        results.append((loss.item(), logits.grad.clone()))
    (fused_loss, fused_grad), (naive_loss, naive_grad) = results
    print(f"  fused vs naive: loss {fused_loss:.6f} vs {naive_loss:.6f}, "
          f"max |grad diff| {(fused_grad - naive_grad).abs().max().item():.2e} "
          f"(max |grad| {naive_grad.abs().max().item():.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="tiny,paper25k,paper50k", help=f"comma list of {', '.join(SHAPES)}")
    parser.add_argument("--reps", type=int, default=0,
                        help="timed rounds of the loss; the head step gets half, at least 2 "
                             "(default: 6 tiny, 3 paper-small)")
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--chunk-mb", type=float, default=0, help="override losses.CHUNK_BYTES (tuning)")
    args = parser.parse_args()
    if args.chunk_mb:
        losses.CHUNK_BYTES = int(args.chunk_mb * 2**20)
    torch.manual_seed(0)
    for name in args.shapes.split(","):
        n, d, vocab = SHAPES[name]
        bench_shape(name, n, d, vocab, args.k, args.temperature, args.reps or (6 if name == "tiny" else 3))


if __name__ == "__main__":
    main()
