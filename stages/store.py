"""`pipeline store slice` and `pipeline store status`: work on an existing logit store without the teacher.

slice   a smaller store cut exactly from a bigger one (fewer ids, temperatures or splits;
        pipeline/store_slicing.py has the math), written shard by shard with its own card
status  what a dump (split in parts, interrupted) has written and what it still misses
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.dump_parts import owner, unwritten_shards
from pipeline.dump_spec import SPLIT_CHOICES
from pipeline.errors import UserError
from pipeline.logit_store import LogitStore, LogitStoreWriter
from pipeline.progress import ProgressBar, log
from pipeline.storage import LOGITS, atomic_output, check_apart
from pipeline.store_slicing import narrowed, sliced_meta


@dataclass
class SliceConfig:
    store: str
    """The logit store to cut from (complete; local path or fsspec URL)."""
    out: str
    """The smaller store to write (apart from `store`)."""
    top_k: int | None = None
    """Ids kept per position (None: as stored); at most the stored k."""
    temperatures: list[float] = field(default_factory=list)
    """Temperatures kept, in this column order (empty: all stored); each must be stored."""
    split: str = "all"
    """"train", "val" or "all" (every stored split)."""
    force: bool = False
    """Replace an existing logit store at `out` (only a logit store)."""

    def __post_init__(self) -> None:
        if self.split not in SPLIT_CHOICES:
            raise UserError(f"--split {self.split!r}: expected one of {', '.join(SPLIT_CHOICES)}")


def run_slice(config: SliceConfig) -> dict[str, Any]:
    """Write the slice; returns its location, positions and statistics."""
    check_apart(config.out, {"STORE": config.store})
    source = LogitStore.open(config.store, option="STORE")
    meta, columns = sliced_meta(source, config.top_k, config.temperatures, config.split)
    started = time.perf_counter()
    work = [(split, shard) for split in meta.splits for shard in range(meta.n_shards(split))]
    bar = ProgressBar(sum(meta.positions.values()), 0, "store slice", 1, unit="position")
    with atomic_output(config.out, config.force, kinds=(LOGITS,)) as target:
        writer = LogitStoreWriter.create(target, meta)
        for split, shard in work:
            lo, hi = writer.shard_range(split, shard)
            writer.write_shard(split, shard, narrowed(source.read_rows(split, lo, hi), meta.k, columns))
            bar.update(steps=hi - lo)
        bar.close()
        final = writer.finish({"slice_wall_time_s": round(time.perf_counter() - started, 3)})
    log(f"store slice: top-{final.k} at T = {', '.join(f'{t:g}' for t in final.temperatures)} of "
        f"{config.store} -> {config.out}, {final.stats['bytes_per_position']:.1f} bytes/position")
    return {"location": config.out, "positions": dict(final.positions), "stats": final.stats}


@dataclass
class StatusConfig:
    store: str
    """The logit store (complete or not) to report on."""


def run_status(config: StatusConfig) -> dict[str, Any]:
    """{"complete", "parts", "splits": {split: {"shards", "written", "missing", "owners"}}, "lost_files"}.

    `owners` names the part (of the number the dump was split into) that owns each missing shard;
    `lost_files` are shard files whose marker is set but which are gone (zarr would read zeros)."""
    store = LogitStore.open(config.store, require_complete=False, option="STORE", check_files=False)
    parts = store.meta.provenance.get("parts", 1)
    missing = unwritten_shards(store)
    splits = {split: {"shards": store.meta.n_shards(split), "written": store.meta.n_shards(split) - len(shards),
                      "missing": shards, "owners": [owner(s, parts) for s in shards]}
              for split, shards in missing.items()}
    return {"complete": store.meta.complete, "parts": parts, "splits": splits, "lost_files": store.missing_files()}
