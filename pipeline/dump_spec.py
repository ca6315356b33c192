"""The dump spec: how a teacher's distribution is written to a logit store. One definition, used by
`dump-teacher`'s options, an experiment's [dump] table, the dump stage, and (as the store's metadata)
every reader. Kept free of torch and zarr imports so the CLI starts fast.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import PRECISIONS
from pipeline.errors import UserError

DEFAULT_TEMPERATURES = (1.0, 6.0)
"""Temperatures stored exactly by default: the paper's T = 6 and T = 1."""
SPLIT_CHOICES = ("train", "val", "all")


def check_temperatures(temperatures, option: str = "--temperatures") -> tuple[float, ...]:
    """The temperatures as floats, in the order given; each finite and > 0, no duplicates."""
    temps = tuple(float(t) for t in temperatures)
    if not temps:
        raise UserError(f"{option}: give at least one temperature")
    for t in temps:
        if not (math.isfinite(t) and t > 0):
            raise UserError(f"{option}: temperature {t} must be a finite number > 0")
    if len(set(temps)) != len(temps):
        raise UserError(f"{option}: temperatures {list(temps)} contain duplicates")
    return temps


@dataclass
class DumpSpec:
    """What `dump-teacher` computes and how it lays the store out."""

    top_k: int = 64
    """Ids stored per position."""
    temperatures: list[float] = field(default_factory=lambda: list(DEFAULT_TEMPERATURES))
    """Temperatures whose normalizer and tail are stored exactly (any T's top-k log-probs are exact)."""
    stride: int = 0
    """Step between teacher windows; 0 = the teacher's context (non-overlapping)."""
    split: str = "all"
    """"train", "val" or "all"."""
    batch_size: int = 32
    """Teacher windows per forward pass."""
    codec: str | None = None
    """Compressor preset (None: the measured best; the list is in docs/STORE.md)."""
    shard_rows: int = 65536
    """Positions per shard file: the unit of work, resume and transfer."""
    chunk_rows: int = 4096
    """Positions per compressed, checksummed chunk: the unit of a training read."""
    precision: str = "auto"
    """"auto" (bf16 trunk on CUDA, fp32 elsewhere), "fp32" or "bf16"; recorded in the store."""

    def __post_init__(self) -> None:
        self.temperatures = list(check_temperatures(self.temperatures, "temperatures"))
        for name, low in (("top_k", 1), ("stride", 0), ("batch_size", 1), ("shard_rows", 1), ("chunk_rows", 1)):
            if getattr(self, name) < low:
                raise UserError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.shard_rows % self.chunk_rows:
            raise UserError(f"shard_rows {self.shard_rows} must be a multiple of chunk_rows {self.chunk_rows}")
        if self.split not in SPLIT_CHOICES:
            raise UserError(f"split must be one of {', '.join(SPLIT_CHOICES)}, got {self.split!r}")
        if self.precision not in PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
