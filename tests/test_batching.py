"""Data order and teacher rows of `BatchStream`, checked with rows that carry their own positions.

A fake row source returns `Tagged` rows whose only content is the absolute position of each row, so a
batch's teacher rows are right exactly when they equal its windows' input positions. The data order is
checked against a plain re-implementation of the documented algorithm, so existing runs keep their batches.
"""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np
import pytest
import torch

from pipeline.batching import GROUP_BLOCKS, BatchStream, WindowPlan
from pipeline.logit_store import LogitStore, LogitStoreMeta, LogitStoreWriter
from pipeline.teacher_rows import TeacherRows


class Tagged:
    """Rows that are just their absolute positions [n]; slicing and `cat` as `_BlockRows` uses them."""

    def __init__(self, positions: np.ndarray):
        self.positions = positions

    def __getitem__(self, rows: slice) -> "Tagged":
        return Tagged(self.positions[rows])

    def __len__(self) -> int:
        return len(self.positions)

    @staticmethod
    def cat(parts: list["Tagged"]) -> "Tagged":
        return Tagged(np.concatenate([p.positions for p in parts]))


class CountingSource:
    """A RowSource over [0, n_tokens) that records each call and which of its results are still alive."""

    def __init__(self, n_tokens: int, fail_on_call: int | None = None):
        self.n_tokens, self.fail_on_call = n_tokens, fail_on_call
        self.calls: list[tuple[int, int]] = []
        self.live: weakref.WeakSet = weakref.WeakSet()
        self.most_alive = 0  # the most results alive at once (the loader's cache size, in blocks)

    def __call__(self, start: int, stop: int) -> Tagged:
        assert 0 <= start < stop <= self.n_tokens, (start, stop)
        if len(self.calls) == self.fail_on_call:
            raise OSError(f"disk gone at rows {start}-{stop}")
        self.calls.append((start, stop))
        rows = Tagged(np.arange(start, stop, dtype=np.int64))
        self.live.add(rows)
        self.most_alive = max(self.most_alive, len(self.live))
        return rows


def window_positions(starts: np.ndarray, context: int) -> np.ndarray:
    """[B * C] input positions of windows `starts`, row-major."""
    return (starts[:, None] + np.arange(context)[None, :]).ravel()


def reference_order(n_tokens: int, context: int, block_tokens: int, seed: int, epoch: int, rank: int,
                    world: int, batch_size: int) -> list[np.ndarray]:
    """The documented order, written plainly: window starts of each full batch of one rank's epoch."""
    n_windows = max(0, (n_tokens - 1) // context)
    by_block: dict[int, list[int]] = {}
    for j in range(n_windows):
        by_block.setdefault(j * context // block_tokens, []).append(j * context)
    blocks = [by_block[b] for b in sorted(by_block)]
    dealt = np.random.default_rng([seed, epoch]).permutation(len(blocks))
    per_rank = [[blocks[i] for i in dealt[r::world]] for r in range(world)]
    totals = [sum(len(b) for b in mine) for mine in per_rank]
    steps = min(totals) // batch_size
    order = []
    for g in range(0, len(per_rank[rank]), GROUP_BLOCKS):
        group = [s for block in per_rank[rank][g:g + GROUP_BLOCKS] for s in block]
        shuffle = np.random.default_rng([seed, epoch, rank, g]).permutation(len(group))
        order += [group[i] for i in shuffle]
    return [np.array(order[i * batch_size:(i + 1) * batch_size]) for i in range(steps)]


def block_reads(plan: WindowPlan, blocks: set[int]) -> set[tuple[int, int]]:
    """The one read each block should cost: its first window start to its last window's end."""
    reads = set()
    for block in blocks:
        starts = [j * plan.context for j in range(plan.n_windows) if j * plan.context // plan.block_tokens == block]
        reads.add((starts[0], starts[-1] + plan.context))
    return reads


# (n_tokens, context, block_tokens, batch_size): blocks that are / are not multiples of the context, blocks
# shorter than a window, and batches larger than a whole group of GROUP_BLOCKS blocks.
LAYOUTS = [(2001, 16, 64, 8), (2001, 16, 100, 5), (1500, 12, 7, 9), (12001, 4, 16, 1024), (6001, 8, 50, 300)]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_order_is_the_documented_one(layout):
    n_tokens, context, block_tokens, batch_size = layout
    tokens = np.arange(n_tokens, dtype=np.int32)
    for world in (1, 2, 3):
        plan = WindowPlan(n_tokens, context, block_tokens, seed=7)
        for rank in range(world):
            stream = BatchStream(tokens, plan, batch_size, rank, world)
            for epoch in (1, 2):
                expected = reference_order(n_tokens, context, block_tokens, 7, epoch, rank, world, batch_size)
                got = [b.starts for b in stream.epoch(epoch)]
                assert len(got) == len(expected) == stream.steps_per_epoch(epoch)
                assert all(np.array_equal(a, b) for a, b in zip(got, expected))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("world", [1, 2])
def test_teacher_rows_are_the_windows_positions_and_each_block_is_read_once(layout, world):
    n_tokens, context, block_tokens, batch_size = layout
    tokens = np.arange(n_tokens, dtype=np.int32)
    plan = WindowPlan(n_tokens, context, block_tokens, seed=3)
    for rank in range(world):
        source = CountingSource(n_tokens)
        stream = BatchStream(tokens, plan, batch_size, rank, world, row_source=source)
        for epoch in (1, 2):
            source.calls.clear()
            seen = []
            for batch in stream.epoch(epoch):
                positions = window_positions(batch.starts, context)
                assert np.array_equal(batch.teacher.positions, positions)
                assert torch.equal(batch.inputs.flatten(), torch.from_numpy(positions))
                assert torch.equal(batch.targets.flatten(), torch.from_numpy(positions + 1))
                seen.append(batch.starts)
            assert len(seen) == stream.steps_per_epoch(epoch) > 0
            used = set((np.concatenate(seen) // block_tokens).tolist())
            assert sorted(source.calls) == sorted(block_reads(plan, used))  # once each, and nothing else


def test_batches_larger_than_many_groups_keep_every_block_they_need():
    # 4 windows a block, 16 a group: a batch of 1,024 windows spans 64+ groups (the old cache kept 8 blocks).
    n_tokens, context, block_tokens, batch_size = 4 * 3000 + 1, 4, 16, 1024
    plan = WindowPlan(n_tokens, context, block_tokens, seed=0)
    source = CountingSource(n_tokens)
    stream = BatchStream(np.arange(n_tokens), plan, batch_size, row_source=source)
    batches = list(stream.epoch(1))
    assert len(batches) == 3000 // 1024
    for batch in batches:
        assert np.array_equal(batch.teacher.positions, window_positions(batch.starts, context))
    fewest = min(g.size for g in plan.rank_groups(1, 0, 1))
    assert source.most_alive <= GROUP_BLOCKS * (1 + math.ceil((batch_size - 1) / fewest))  # the documented bound


@pytest.mark.parametrize("layout", [(2001, 16, 64, 8), (6001, 8, 50, 3), (1500, 12, 7, 3)])
def test_cache_holds_at_most_two_groups_when_a_batch_fits_in_a_group(layout):
    n_tokens, context, block_tokens, batch_size = layout
    plan = WindowPlan(n_tokens, context, block_tokens, seed=1)
    assert batch_size <= min(g.size for g in plan.rank_groups(1, 0, 1))
    source = CountingSource(n_tokens)
    for _ in BatchStream(np.arange(n_tokens), plan, batch_size, row_source=source).epoch(1):
        pass
    assert len(source.calls) > 2 * GROUP_BLOCKS  # enough blocks that dropping matters
    assert source.most_alive <= 2 * GROUP_BLOCKS


def test_teacher_baseline_and_student_see_the_same_windows():
    n_tokens, context = 3001, 16
    plan = WindowPlan(n_tokens, context, 96, seed=5)
    tokens = np.random.default_rng(0).integers(0, 50, n_tokens)
    with_rows = BatchStream(tokens, plan, 6, row_source=CountingSource(n_tokens))
    without = BatchStream(tokens, plan, 6)
    for epoch in (1, 2):
        fed = list(with_rows.epoch(epoch))
        plain = list(with_rows.epoch(epoch, with_teacher=False))
        baseline = list(without.epoch(epoch))
        assert len(fed) == len(plain) == len(baseline) > 0
        assert all(b.teacher is None for b in plain + baseline) and all(b.teacher is not None for b in fed)
        for a, b, c in zip(fed, plain, baseline):
            assert np.array_equal(a.starts, b.starts) and np.array_equal(a.starts, c.starts)
            assert torch.equal(a.inputs, b.inputs) and torch.equal(a.inputs, c.inputs)
            assert torch.equal(a.targets, c.targets)


@pytest.mark.parametrize("batch_size", [5, 70])
def test_resuming_at_a_step_gives_the_tail_of_the_same_order(batch_size):
    n_tokens, context = 4001, 8
    plan = WindowPlan(n_tokens, context, 40, seed=2)
    source = CountingSource(n_tokens)
    stream = BatchStream(np.arange(n_tokens), plan, batch_size, row_source=source)
    full = list(stream.epoch(1))
    for start_step in (0, 1, len(full) // 2, len(full) - 1, len(full)):
        tail = list(stream.epoch(1, start_step=start_step))
        assert len(tail) == len(full) - start_step
        for a, b in zip(full[start_step:], tail):
            assert np.array_equal(a.starts, b.starts)
            assert np.array_equal(b.teacher.positions, window_positions(b.starts, context))


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("layout", [(2001, 16, 64, 4), (5001, 8, 24, 7), (1500, 12, 7, 9)])
def test_ranks_take_disjoint_equal_shares_and_drop_only_the_tail(world, layout):
    n_tokens, context, block_tokens, batch_size = layout
    plan = WindowPlan(n_tokens, context, block_tokens, seed=4)
    all_windows = set(range(0, plan.n_windows * context, context))
    for epoch in (1, 2):
        taken, steps = [], []
        for rank in range(world):
            stream = BatchStream(np.arange(n_tokens), plan, batch_size, rank, world)
            starts = [int(s) for b in stream.epoch(epoch) for s in b.starts]
            steps.append(stream.steps_per_epoch(epoch))
            assert len(starts) == steps[-1] * batch_size
            # the rank's windows are the first full batches of its whole order; the rest is the dropped tail
            order = np.concatenate(plan.rank_groups(epoch, rank, world)).tolist()
            assert starts == order[:len(starts)]
            fewest = min(sum(g.size for g in plan.rank_groups(epoch, r, world)) for r in range(world))
            assert len(order) - len(starts) < (len(order) - fewest) + batch_size
            taken.append(set(starts))
        assert len(set(steps)) == 1 and steps[0] > 0
        assert sum(len(t) for t in taken) == len(set().union(*taken))  # disjoint
        assert set().union(*taken) <= all_windows
        ranks_orders = [set(np.concatenate(plan.rank_groups(epoch, r, world)).tolist()) for r in range(world)]
        assert set().union(*ranks_orders) == all_windows  # before the tail is dropped, every window is dealt


def test_a_failing_read_surfaces_in_the_consumer():
    n_tokens = 2001
    plan = WindowPlan(n_tokens, 16, 64, seed=0)
    stream = BatchStream(np.arange(n_tokens), plan, 8, row_source=CountingSource(n_tokens, fail_on_call=3))
    got = []
    with pytest.raises(OSError, match="disk gone at rows"):
        for batch in stream.epoch(1):
            got.append(batch)
    assert 0 < len(got) < stream.steps_per_epoch(1)  # the batches before the failure still arrived


def test_leaving_an_epoch_early_stops_the_producer():
    n_tokens = 20001
    plan = WindowPlan(n_tokens, 16, 64, seed=0)
    source = CountingSource(n_tokens)
    stream = BatchStream(np.arange(n_tokens), plan, 2, row_source=source, prefetch_groups=1)
    before = set(threading.enumerate())
    epoch = stream.epoch(1)
    next(epoch)
    started = {t.name.split("_")[0] for t in set(threading.enumerate()) - before}
    assert started == {"batch-producer", "block-reader"}  # the producer and the threads reading ahead for it
    epoch.close()  # what a training loop capped by max_steps_per_epoch does
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert len(source.calls) < len(plan.blocks()) // 4  # it stopped near the bounded queue, far from the end


def test_rows_from_a_real_store_across_shard_and_block_boundaries(tmp_path):
    """A logit store with small shards whose ids tag positions: reads straddle shards and blocks."""
    n_tokens, context, vocab = 1000, 12, 1024
    meta = LogitStoreMeta(token_fingerprint="f" * 64, vocab_size=vocab, k=2, positions={"train": n_tokens},
                          context=context, stride=context, teacher={"checkpoint_sha256": "a" * 64, "model": {}},
                          temperatures=(1.0,), shard_rows=96, chunk_rows=32)
    p = np.arange(n_tokens)
    rows = TeacherRows.from_numpy(np.stack([p, (p + 1) % vocab], 1), np.tile([0.0, -1.0], (n_tokens, 1)),
                                  np.ones((n_tokens, 1)), np.full((n_tokens, 1), 0.5), (1.0,), vocab)
    writer = LogitStoreWriter.create(str(tmp_path / "store"), meta)
    for shard in range(meta.n_shards("train")):
        writer.write_shard("train", shard, rows[slice(*writer.shard_range("train", shard))])
    writer.finish()
    store = LogitStore.open(str(tmp_path / "store"))
    plan = WindowPlan(n_tokens, context, 50, seed=0)  # blocks of 50 positions, shards of 96
    stream = BatchStream(np.arange(n_tokens), plan, 7, row_source=lambda lo, hi: store.read_rows("train", lo, hi))
    batches = list(stream.epoch(1))
    assert len(batches) == plan.n_windows // 7
    for batch in batches:
        positions = torch.from_numpy(window_positions(batch.starts, context))
        assert torch.equal(batch.teacher.ids[:, 0], positions)
        assert torch.equal(batch.teacher.ids[:, 1], (positions + 1) % vocab)


def test_the_next_group_is_read_ahead_while_a_group_trains():
    from pipeline.batching import _BlockRows  # white-box: which reads the first batch starts

    n_tokens, context, block_tokens, batch_size = 4001, 8, 40, 3  # 5 windows a block, 20 a group
    plan = WindowPlan(n_tokens, context, block_tokens, seed=3)
    source = CountingSource(n_tokens)
    groups = plan.rank_groups(1, 0, 1)
    batches = BatchStream(np.arange(n_tokens), plan, batch_size)._batch_starts(groups)
    blocks = _BlockRows(source, plan, groups, batches)
    blocks.rows_for(batches[0])  # a batch inside group 0
    for future in list(blocks.cache.values()):
        future.result()
    blocks.close()
    read = {start // block_tokens for start, _ in source.calls}  # a block's read starts at its first window
    group_blocks = [set((g // block_tokens).tolist()) for g in groups]
    assert read == group_blocks[0] | group_blocks[1]  # its own group, and the next one read ahead
