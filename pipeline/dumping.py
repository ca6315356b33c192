"""Running a frozen teacher over positions and turning its logits into logit-store rows.

`compute_rows` is shared by the dump (whole shards) and by `validate` (sampled positions). Rows are
computed in batches of equal-length windows; everything a batch computes depends only on the windows
in it, which depend only on the shard, so a shard's bytes do not depend on which rank or which run
(fresh or resumed) computed it.
"""

from __future__ import annotations

import concurrent.futures
from collections import defaultdict
from typing import Callable, Iterator

import numpy as np
import torch

from pipeline.teacher_rows import TeacherRows, teacher_rows_from_logits
from pipeline.teacher_windows import Window


def _batches(windows: list[Window], batch_size: int) -> Iterator[list[Window]]:
    by_length: dict[int, list[Window]] = defaultdict(list)
    for window in windows:
        by_length[window.stop - window.start].append(window)
    for length in sorted(by_length, reverse=True):
        group = by_length[length]
        for i in range(0, len(group), batch_size):
            yield group[i:i + batch_size]


@torch.inference_mode()
def compute_rows(model: torch.nn.Module, ids: np.ndarray, windows: list[Window], k: int, temperatures,
                 batch_size: int, device: torch.device, amp: torch.dtype | None) -> TeacherRows:
    """Rows for the positions the windows own, in ascending position order, on the CPU."""
    parts: list[tuple[int, TeacherRows]] = []
    for batch in _batches(windows, batch_size):
        inputs = torch.from_numpy(np.stack([ids[w.start:w.stop] for w in batch]).astype(np.int64)).to(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(inputs)  # [B, L, V]
        # Select each window's owned offsets on the device, then top-k there too: only [n, k] leaves it.
        offsets = torch.cat([torch.arange(w.own_lo - w.start, w.own_hi - w.start) for w in batch]).to(device)
        rows_of = torch.cat([torch.full((w.own_hi - w.own_lo,), i) for i, w in enumerate(batch)]).to(device)
        rows = teacher_rows_from_logits(logits[rows_of, offsets], k, temperatures).to("cpu")
        at = 0
        for window in batch:
            size = window.own_hi - window.own_lo
            parts.append((window.own_lo, rows[at:at + size]))
            at += size
    parts.sort(key=lambda item: item[0])
    return TeacherRows.cat([rows for _, rows in parts])


class BackgroundWriter:
    """Writes shards on a thread while the next shard computes; at most `depth` shards wait in memory."""

    def __init__(self, write: Callable[..., None], depth: int = 2):
        self.write, self.depth = write, depth
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self.pending: list[concurrent.futures.Future] = []

    def submit(self, *args) -> None:
        while len(self.pending) >= self.depth:
            self.pending.pop(0).result()  # re-raises a write error here, in the main thread
        self.pending.append(self.pool.submit(self.write, *args))

    def drain(self) -> None:
        try:
            for future in self.pending:
                future.result()
        finally:
            self.pending.clear()
            self.pool.shutdown(wait=True)
