"""Running a frozen teacher over positions and turning its logits into logit-store rows.

`compute_rows` is shared by the dump (whole shards) and by `validate` (sampled positions). Rows are
computed in batches of equal-length windows; everything a batch computes depends only on the windows
in it, which depend only on the shard, so a shard's bytes do not depend on which rank or which run
(fresh or resumed) computed it.

Precision: under bf16 autocast only the transformer trunk runs in bfloat16; the final LayerNorm, the
output head and the normalizers always run in float32 (`head_fp32`), so rounding the logits to
bfloat16 (~0.4% of each logit) never enters the store. What bf16 still changes is the trunk's output;
the store records which it was (`LogitStoreMeta.precision`, docs/STORE.md section 5).
"""

from __future__ import annotations

import concurrent.futures
from collections import defaultdict
from typing import Callable, Iterator

import numpy as np
import torch

from pipeline.config import PRECISIONS, resolved_precision
from pipeline.errors import UserError
from pipeline.model import GPT
from pipeline.teacher_rows import TeacherRows

# (logits [n, V] on the device, absolute positions [n]) -> rows (sampled_rows.row_maker picks the kind).
RowMaker = Callable[[torch.Tensor, np.ndarray], TeacherRows]
from pipeline.teacher_windows import Window

# --precision (PRECISIONS, as training's train.precision) -> what the store records (logit_store.PRECISIONS).
RECORDED_PRECISION = {"fp32": "fp32", "bf16": "bf16-autocast-fp32-head"}


def dump_autocast(precision: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """(autocast dtype or None, the precision name the store records) for --precision on `device`.

    auto = bf16 autocast on CUDA, fp32 elsewhere; bf16 also works on the CPU (slowly), for tests."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    chosen = resolved_precision(precision, device.type)
    return (torch.bfloat16 if chosen == "bf16" else None), RECORDED_PRECISION[chosen]


def _batches(windows: list[Window], batch_size: int) -> Iterator[list[Window]]:
    by_length: dict[int, list[Window]] = defaultdict(list)
    for window in windows:
        by_length[window.stop - window.start].append(window)
    for length in sorted(by_length, reverse=True):
        group = by_length[length]
        for i in range(0, len(group), batch_size):
            yield group[i:i + batch_size]


@torch.inference_mode()
def compute_rows(model, ids: np.ndarray, windows: list[Window], make_rows: RowMaker,
                 batch_size: int, device: torch.device, amp: torch.dtype | None) -> TeacherRows:
    """Rows for the positions the windows own, in ascending position order, on the CPU.

    `amp` (e.g. torch.bfloat16) autocasts the trunk only; the head and everything after it are float32."""
    parts: list[tuple[int, TeacherRows]] = []
    for batch in _batches(windows, batch_size):
        # Top-k on the device too: only [n, k] leaves it.
        positions = np.concatenate([np.arange(w.own_lo, w.own_hi) for w in batch])
        rows = make_rows(owned_logits(model, ids, batch, device, amp), positions).to("cpu")
        at = 0
        for window in batch:
            size = window.own_hi - window.own_lo
            parts.append((window.own_lo, rows[at:at + size]))
            at += size
    parts.sort(key=lambda item: item[0])
    return type(parts[0][1]).cat([rows for _, rows in parts])  # TeacherRows or SampledRows


def owned_logits(model, ids: np.ndarray, batch: list[Window], device: torch.device,
                 amp: torch.dtype | None) -> torch.Tensor:
    """Float32 logits [n, V] of the positions equal-length windows own, window by window, on `device`.

    The trunk runs under `amp` autocast. The gpt family's head runs only on the owned offsets, in float32;
    other families (no separable head) run whole under autocast and their logits are cast to float32."""
    inputs = torch.from_numpy(np.stack([ids[w.start:w.stop] for w in batch]).astype(np.int64)).to(device)
    offsets = torch.cat([torch.arange(w.own_lo - w.start, w.own_hi - w.start) for w in batch]).to(device)
    rows_of = torch.cat([torch.full((w.own_hi - w.own_lo,), i) for i, w in enumerate(batch)]).to(device)
    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        if not isinstance(model, GPT):
            return model(inputs)[rows_of, offsets].float()  # [n, V]
        hidden = model.hidden(inputs)  # [B, L, C]
    return head_fp32(model, hidden[rows_of, offsets])


def head_fp32(model: GPT, hidden: torch.Tensor) -> torch.Tensor:
    """The final LayerNorm and output head in float32 with autocast off: [n, C] -> logits [n, V]."""
    with torch.autocast(hidden.device.type, enabled=False):
        return model.head(model.ln_f(hidden.float()))


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
