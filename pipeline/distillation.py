"""The distillation spec: how a student learns from its teacher. One definition, used by `train-student`'s
options, experiment variants, the superstill objective, checkpoints (run identity) and run.json.

L = w_teacher * T^2 * l_t + w_data * l_d through `transition_epoch`, then plain l_d (docs/LOSS.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from pipeline.errors import UserError

TAIL_MODES = ("bucket", "renorm")
"""How the teacher's mass outside the stored top-k is matched (pipeline/losses.py explains both)."""
ALL_EPOCHS = "all"
"""transition_epoch value meaning "never switch to plain cross-entropy"."""


@dataclass
class DistillationSpec:
    """The teacher term's settings; defaults are the paper's."""

    temperature: float = 6.0
    """T of the teacher term (the paper: 6). Exact for temperatures listed in the store, bounded otherwise."""
    w_teacher: float = 0.6
    """w1, weight of T^2 * l_t (the paper: 0.6)."""
    w_data: float = 0.4
    """w2, weight of l_d (the paper: 0.4)."""
    tail: str = "bucket"
    """"bucket" (the teacher's tail mass as one extra outcome) or "renorm" (top-k renormalized)."""
    transition_epoch: int | str = ALL_EPOCHS
    """Superstill through this epoch, then plain l_d; "all" never switches (the paper: 14 small, 1 or 3 large)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise UserError(f"temperature must be a finite number > 0, got {self.temperature}")
        for name in ("w_teacher", "w_data"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise UserError(f"{name} must be a finite number >= 0, got {value}")
        if self.tail not in TAIL_MODES:
            raise UserError(f"tail must be one of {', '.join(TAIL_MODES)}, got {self.tail!r}")
        self.transition_epoch = parse_transition_epoch(self.transition_epoch)

    def uses_teacher(self, epoch: int) -> bool:
        """Whether epoch `epoch` (1-based) trains with the teacher term."""
        return self.transition_epoch == ALL_EPOCHS or epoch <= int(self.transition_epoch)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_transition_epoch(value: int | str) -> int | str:
    """"all" or a whole number >= 0 (text from the command line is parsed)."""
    if value == ALL_EPOCHS:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"transition_epoch must be an epoch number >= 0 or \"{ALL_EPOCHS}\", got {value!r}")
    return value
