"""Benchmark: end-to-end `tokenize` throughput versus a naive spaCy loop, measured in one run.

    python benchmarks/bench_tokenize.py [--corpus DIR] [--repeats N]

Prints tokens/s for the full stage (files -> finished token store: read, hash, tokenize, vocabulary,
ids, Zarr write) at 1 and 2 workers, and for a naive single-process loop
`for doc in spacy.blank("en").tokenizer.pipe(lines)` collecting non-whitespace token strings over
the same (already read, lowercased) text. Target: the 2-worker stage >= 2.0x the naive loop.
spaCy is imported once before any timing (both sides would pay it equally). Each figure is the best
of --repeats runs, interleaved, because this machine's cores are shared; CPU seconds (this process
plus pool workers) show the work done independently of what other users leave free.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.corpus import find_corpus_files, read_document  # noqa: E402
from stages.tokenize import TokenizeConfig, run  # noqa: E402

SHARED_CORPUS = REPO.parent / "shared/corpora/shakespeare"
DEFAULT_CORPUS = SHARED_CORPUS if SHARED_CORPUS.is_dir() else REPO / "data/corpora/shakespeare"


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (pool workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def naive(lines: list[str]) -> tuple[float, float, int]:
    """The straightforward way: one process, default tokenizer, token strings from each Doc."""
    import spacy

    started, cpu = time.perf_counter(), cpu_seconds()
    tokenizer = spacy.blank("en").tokenizer
    tokens: list[str] = []
    for doc in tokenizer.pipe(lines):
        tokens.extend(token.text for token in doc if not token.is_space)
    return time.perf_counter() - started, cpu_seconds() - cpu, len(tokens)


def end_to_end(corpus: Path, workers: int, scratch: Path) -> tuple[float, float, int]:
    out = scratch / f"store-{workers}-{time.monotonic_ns()}"
    started, cpu = time.perf_counter(), cpu_seconds()
    store = run(TokenizeConfig(corpus=[str(corpus)], out=str(out), workers=workers, progress=False))
    seconds = time.perf_counter() - started
    return seconds, cpu_seconds() - cpu, sum(entry.get("tokens", 0) for entry in store.meta.manifest)


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def machine_parallelism(n: int = 5_000_000) -> float:
    """How much faster two processes finish two equal pure-Python loops than one does, right now:
    ~2 on two idle cores, ~1 when other users' jobs leave one core free."""
    started = time.perf_counter()
    _spin(n), _spin(n)
    serial = time.perf_counter() - started
    with multiprocessing.get_context("fork").Pool(2) as pool:
        started = time.perf_counter()
        pool.map(_spin, [n, n])
        parallel = time.perf_counter() - started
    return serial / parallel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"Error: --corpus {args.corpus} does not exist; fetch it with data/shakespeare.py")
    import spacy  # noqa: F401  (import cost excluded from every figure)

    texts = [read_document(path).text or "" for path in find_corpus_files([args.corpus])]
    lines = [line for text in texts for line in text.lower().split("\n")]
    best: dict[str, tuple[float, float, int]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeats):
            for name, measure in (("naive", lambda: naive(lines)),
                                  ("stage, 1 worker", lambda: end_to_end(args.corpus, 1, Path(scratch))),
                                  ("stage, 2 workers", lambda: end_to_end(args.corpus, 2, Path(scratch)))):
                result = measure()
                if name not in best or result[0] < best[name][0]:
                    best[name] = result
    report(best, args.corpus, args.repeats)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; two processes ran "
          f"{machine_parallelism():.2f}x faster than one on a plain CPU loop just now (2.00 = two free cores)")


def report(best: dict[str, tuple[float, float, int]], corpus: Path, repeats: int) -> None:
    naive_rate = best["naive"][2] / best["naive"][0]
    print(f"corpus {corpus}: {best['naive'][2]:,} tokens (naive) / {best['stage, 1 worker'][2]:,} (stage); "
          f"best of {repeats}")
    for name, (seconds, cpu, tokens) in best.items():
        rate = tokens / seconds
        print(f"  {name:<17} {seconds:7.2f} s wall {cpu:6.2f} s CPU  {rate:12,.0f} tokens/s  "
              f"{rate / naive_rate:5.2f}x naive")
    ratio = best["stage, 2 workers"][2] / best["stage, 2 workers"][0] / naive_rate
    print(f"target: stage at 2 workers >= 2.0x naive -> {ratio:.2f}x ({'met' if ratio >= 2.0 else 'NOT met'})")


if __name__ == "__main__":
    main()
