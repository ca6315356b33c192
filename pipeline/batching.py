"""Data order and batches: context windows over a token split, shuffled block-wise, prefetched.

Windows are non-overlapping: window j reads inputs ids[s:s+C] and targets ids[s+1:s+C+1] with s = j*C.
The order is a pure function of (seed, epoch, rank, world), identical for the teacher, the baseline and
every student, so comparisons between them are fair. It is block-wise because a logit store is read
block by block: reading ~1-2 ms per zarr indexing call forbids fetching rows window by window, so each
epoch shuffles the order of blocks of `block_tokens` positions, deals blocks to ranks round-robin, and
shuffles the windows within each group of `GROUP_BLOCKS` consecutive blocks of a rank's list. A rank's
batches are consecutive slices of its groups' windows in group order, so a batch may straddle groups (and
span several when it holds more windows than a group). Every rank takes the same number of full batches,
the smallest rank's, so each epoch drops each rank's windows after its last full batch (fewer than one
batch plus the difference between the ranks' window counts). Rows are read once per block per epoch by a
background thread while the model trains on earlier batches, the next group's blocks read ahead on a few
more (`_BlockRows`).
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

GROUP_BLOCKS = 4  # blocks whose windows are shuffled together: mixes distant text into each batch
READERS = GROUP_BLOCKS  # threads reading blocks: a whole group's reads overlap (latency-bound object storage)


@dataclass
class Batch:
    inputs: torch.Tensor  # [B, C] int64 token ids
    targets: torch.Tensor  # [B, C] int64 next-token ids
    starts: np.ndarray  # [B] absolute position of each window's first input token
    teacher: object | None = None  # TeacherRows for the B*C input positions (row-major), or None


RowSource = Callable[[int, int], object]
"""(start, stop) -> teacher rows for absolute positions [start, stop) (a TeacherRows)."""


@dataclass(frozen=True)
class WindowPlan:
    """Which windows exist in a split and how an epoch orders them."""

    n_tokens: int
    context: int
    block_tokens: int
    seed: int

    @property
    def n_windows(self) -> int:
        return max(0, (self.n_tokens - 1) // self.context)

    def blocks(self) -> list[np.ndarray]:
        """Window start positions grouped by the block that holds them."""
        starts = np.arange(self.n_windows, dtype=np.int64) * self.context
        if starts.size == 0:
            return []
        block_of = starts // self.block_tokens
        cuts = np.flatnonzero(np.diff(block_of)) + 1
        return np.split(starts, cuts)

    def rank_groups(self, epoch: int, rank: int, world: int) -> list[np.ndarray]:
        """This rank's window starts for one epoch, as shuffled groups (each a few blocks)."""
        rng = np.random.default_rng([self.seed, epoch])
        blocks = self.blocks()
        order = rng.permutation(len(blocks))
        mine = [blocks[i] for i in order[rank::world]]
        groups = []
        for g in range(0, len(mine), GROUP_BLOCKS):
            starts = np.concatenate(mine[g:g + GROUP_BLOCKS])
            groups.append(starts[np.random.default_rng([self.seed, epoch, rank, g]).permutation(starts.size)])
        return groups

    def steps_per_epoch(self, batch_size: int, world: int, epoch: int) -> int:
        """Equal for every rank (DDP needs it): the smallest rank's full batches that epoch."""
        if world == 1:
            return self.n_windows // batch_size
        return min(sum(g.size for g in self.rank_groups(epoch, r, world)) for r in range(world)) // batch_size


class BatchStream:
    """Yields one epoch of batches for one rank, reading teacher rows (if any) in a background thread."""

    def __init__(self, tokens: np.ndarray, plan: WindowPlan, batch_size: int, rank: int = 0, world: int = 1,
                 row_source: RowSource | None = None, prefetch_groups: int = 2):
        self.tokens, self.plan, self.batch_size = tokens, plan, batch_size
        self.rank, self.world, self.row_source, self.prefetch_groups = rank, world, row_source, prefetch_groups
        self.wait_seconds = 0.0  # time the consumer spent blocked on the producer (data-loader stall)

    def steps_per_epoch(self, epoch: int) -> int:
        return self.plan.steps_per_epoch(self.batch_size, self.world, epoch)

    def epoch(self, epoch: int, start_step: int = 0, with_teacher: bool = True) -> Iterator[Batch]:
        """Batches start_step.. of `epoch`; teacher rows only when `with_teacher` and a source exists."""
        steps = self.steps_per_epoch(epoch)
        groups = self.plan.rank_groups(epoch, self.rank, self.world)
        batches = self._batch_starts(groups)[start_step:steps]
        source = self.row_source if with_teacher else None
        if not batches:
            return
        work: queue.Queue = queue.Queue(maxsize=max(1, self.prefetch_groups * 8))
        stop = threading.Event()
        producer = threading.Thread(target=self._produce, args=(batches, groups, source, work, stop), daemon=True,
                                    name="batch-producer")
        producer.start()
        try:
            for _ in batches:
                waited = time.perf_counter()
                item = work.get()
                self.wait_seconds += time.perf_counter() - waited
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while producer.is_alive():  # unblock a producer waiting on a full queue
                try:
                    work.get_nowait()
                except queue.Empty:
                    producer.join(timeout=0.05)

    def _batch_starts(self, groups: list[np.ndarray]) -> list[np.ndarray]:
        """The rank's full batches: consecutive slices of its groups' windows, in group order."""
        starts = np.concatenate(groups or [np.zeros(0, np.int64)])
        return [starts[i:i + self.batch_size] for i in range(0, starts.size - self.batch_size + 1, self.batch_size)]

    def _produce(self, batches: list[np.ndarray], groups: list[np.ndarray], source: RowSource | None,
                 work: queue.Queue, stop: threading.Event) -> None:
        blocks = None
        try:
            blocks = _BlockRows(source, self.plan, groups, batches) if source is not None else None
            for starts in batches:
                if stop.is_set():
                    return
                work.put(self._make_batch(starts, blocks))
        except BaseException as error:  # surfaced in the consumer, which re-raises it
            work.put(error)
        finally:
            if blocks is not None:
                blocks.close()

    def _make_batch(self, starts: np.ndarray, blocks: "_BlockRows | None") -> Batch:
        offsets = starts[:, None] + np.arange(self.plan.context + 1)[None, :]  # [B, C+1] absolute positions
        window = torch.from_numpy(self.tokens[offsets].astype(np.int64))
        teacher = blocks.rows_for(starts) if blocks is not None else None
        return Batch(inputs=window[:, :-1], targets=window[:, 1:], starts=starts, teacher=teacher)


class _BlockRows:
    """Teacher rows of the blocks in use: one read per block per epoch, dropped once the order has left them,
    read ahead a group at a time on READERS threads.

    A block's read covers every window that starts in it, [first start, last start + C), so it may run a
    little into the next block. Each block belongs to exactly one shuffle group per epoch and batches take
    the groups' windows in order, so when a batch's first window lies in group g, blocks of groups before g
    are never needed again: those, and only those, are dropped. No block of group g or later is dropped, so
    none is read twice and none the batch needs is missing.

    Read-ahead: when a batch lies within one group g, every block of groups g and g + 1 that some remaining
    batch uses starts reading on the pool, so group g + 1's blocks arrive while group g trains (a group is
    GROUP_BLOCKS blocks, e.g. 4 x 65,536 positions); the blocks a batch needs are read concurrently too. With
    a store behind ~20 ms per request, reading a group's blocks one after another when its first batch needs
    them stalled fast steps (benchmarks/bench_remote_loader.py: 15-17% of step time; 0.2% with read-ahead).

    Memory bound: the cache holds blocks of the groups the current batch touches and, when that is one
    group, of the next: at most GROUP_BLOCKS * max(2, 1 + ceil((B - 1) / W)) blocks for B windows a batch and
    W the fewest windows in a group: 2 * GROUP_BLOCKS blocks whenever a batch fits in a group. A block's rows
    are about block_tokens + C; batches waiting in the prefetch queue hold their own copies (B * C rows each).
    """

    def __init__(self, source: RowSource, plan: WindowPlan, groups: list[np.ndarray], batches: list[np.ndarray]):
        self.source, self.plan = source, plan
        self.group_of: dict[int, int] = {}  # block -> index of the group (this epoch) that holds its windows
        for g, starts in enumerate(groups):
            self.group_of.update(dict.fromkeys(np.unique(starts // plan.block_tokens).tolist(), g))
        used = set(np.unique(np.concatenate(batches) // plan.block_tokens).tolist()) if batches else set()
        self.group_blocks: dict[int, list[int]] = {}  # group -> its blocks that a remaining batch uses
        for block in sorted(used):
            self.group_blocks.setdefault(self.group_of[block], []).append(block)
        self.cache: dict[int, concurrent.futures.Future] = {}  # block -> future (first position read, rows)
        self.pool = concurrent.futures.ThreadPoolExecutor(READERS, thread_name_prefix="block-reader")

    def rows_for(self, starts: np.ndarray):
        """Rows of the B*C input positions of windows `starts` [B], row-major."""
        block_of = starts // self.plan.block_tokens  # [B]
        needed = set(block_of.tolist())
        groups = {self.group_of[block] for block in needed}
        current = min(groups)  # the batch's first group
        for block in [b for b in self.cache if self.group_of[b] < current]:
            del self.cache[block]
        ahead = self.group_blocks.get(current, []) + self.group_blocks.get(current + 1, []) if len(groups) == 1 else []
        for block in dict.fromkeys(sorted(needed) + ahead):  # the batch's blocks first, then read-ahead
            if block not in self.cache:
                self.cache[block] = self.pool.submit(self._read, block)
        pieces = []
        for start, block in zip(starts.tolist(), block_of.tolist()):
            first, rows = self.cache[block].result()  # re-raises a failed read here, in the producer
            pieces.append(rows[start - first:start - first + self.plan.context])
        return type(pieces[0]).cat(pieces)

    def close(self) -> None:
        """Stop reading ahead; waits for reads in flight (at most READERS blocks)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.cache.clear()

    def _read(self, block: int) -> tuple[int, object]:
        """(first window start in `block`, rows [first, last start + C)) in one source call."""
        context = self.plan.context
        first = -(-(block * self.plan.block_tokens) // context) * context  # ceil to a window start
        last = min((block + 1) * self.plan.block_tokens, self.plan.n_windows * context) - 1
        last = last - last % context  # the last window start in the block
        return first, self.source(first, last + context)
