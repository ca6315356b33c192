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
from pipeline.distillation import PRESETS, DistillationSpec
from pipeline.errors import UserError

DEFAULT_TEMPERATURES = tuple(sorted({DistillationSpec.temperature, PRESETS["paper"]["temperature"]}))
"""Temperatures stored exactly by default: train-student's default T and the paper's (pipeline/distillation.py),
so a store made with defaults serves both exactly."""
SPLIT_CHOICES = ("train", "val", "all")
ROW_KINDS = ("topk", "sampled")
"""What a logit store's rows are: the teacher's top-k (teacher_rows.py) or sampled ids with counts (sampled_rows.py)."""
MAX_SAMPLES = 65535
"""The most draws per position a sampled store keeps (a store row holds all N)."""


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
    rows: str = "topk"
    """"topk" (the k most likely ids, their scores, normalizers and tail) or "sampled" (ids drawn from the
    teacher with their counts: an unbiased target at about a third of top-64's bytes; docs/STORE.md section 10)."""
    samples: int = 50
    """sampled rows: N, draws per position."""
    sample_temperature: float = 1.0
    """sampled rows: T_s, the temperature drawn at (students train at exactly this T)."""
    sample_seed: int = 0
    """sampled rows: the seed of the per-position draws."""

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
        self._check_row_settings()

    def _check_row_settings(self) -> None:
        """Settings of one row kind given for the other are refused, not silently ignored."""
        if self.rows not in ROW_KINDS:
            raise UserError(f"rows must be one of {', '.join(ROW_KINDS)}, got {self.rows!r}")
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise UserError(f"samples must be between 1 and {MAX_SAMPLES}, got {self.samples}")
        if not (math.isfinite(self.sample_temperature) and self.sample_temperature > 0):
            raise UserError(f"sample_temperature must be a finite number > 0, got {self.sample_temperature}")
        if not 0 <= self.sample_seed < 2 ** 63:
            raise UserError(f"sample_seed must be between 0 and 2^63 - 1, got {self.sample_seed}")
        from pipeline.spec_parsing import defaults

        other, default = (_TOPK_ONLY if self.rows == "sampled" else _SAMPLED_ONLY), defaults(type(self))
        changed = [name for name in other if getattr(self, name) != default[name]]
        if changed:
            kind = "topk" if self.rows == "sampled" else "sampled"
            hint = " (sampled rows are drawn at sample_temperature)" if changed[0] == "temperatures" else ""
            raise UserError(f"{changed[0]} {getattr(self, changed[0])!r} applies to {kind} rows only, not to "
                            f"{self.rows} rows; leave it out or dump {kind} rows{hint}")

    def row_width(self) -> int:
        """The store's `k`: ids stored per position (sampled rows: the N draws, repeats included)."""
        return self.top_k if self.rows == "topk" else self.samples

    def row_temperatures(self) -> tuple[float, ...]:
        """The store's `temperatures`: the listed ones for top-k rows, (T_s,) for sampled rows."""
        return tuple(self.temperatures) if self.rows == "topk" else (self.sample_temperature,)

    def to_dict(self) -> dict[str, Any]:
        """The settings that apply: a top-k spec leaves out the sampling ones, so its dict (and an
        experiment's stage key made from it) is what it was before sampled rows existed; a sampled spec
        leaves out top_k and temperatures."""
        data = dataclasses.asdict(self)
        for name in (("rows",) + _SAMPLED_ONLY if self.rows == "topk" else _TOPK_ONLY):
            del data[name]
        return data


def check_sampled_temperature(sample_temperature: float, temperature: float, where: str) -> None:
    """Sampled rows train only at the temperature they were drawn at (docs/LOSS.md says why): a UserError
    naming `where` (an option or an experiment key) otherwise."""
    if not math.isclose(temperature, sample_temperature, rel_tol=1e-6):
        raise UserError(f"{where} {temperature:g}: the teacher rows were sampled at T = {sample_temperature:g} and "
                        f"estimate the teacher only there; train at temperature {sample_temperature:g} (or dump "
                        f"again with --sample-temperature {temperature:g})")


_TOPK_ONLY = ("top_k", "temperatures")
_SAMPLED_ONLY = ("samples", "sample_temperature", "sample_seed")
