"""The distillation spec: how a student learns from its teacher. One definition, used by `train-student`'s
options, experiment variants, the superstill objective, checkpoints (run identity) and run.json.

L = w1 * T^2 * l_t + w2 * l_d (docs/LOSS.md), with (w1, w2) over training given by the schedule:
  step    (the paper's) w1 = w_teacher, w2 = w_data through `transition_epoch`, then plain l_d;
  linear  (Knowledge Inheritance's) full weight for `decay_start` epochs, then w1 falls linearly to 0 over
          `decay_epochs` epochs while w2 rises so that w1 + w2 stays w_teacher + w_data;
  auto    full weight until the student's held-out cross-entropy, at an evaluation point (epoch ends and
          `train.eval_every`), reaches the teacher's (recorded in the store at dump time), then the linear
          decay from there: the student stops imitating once it has caught up with its teacher.
Epochs may be fractional: 0.5 is half of the first epoch (the schedule moves every step).

Defaults are the measured recommendation (T = 1, auto schedule; docs/LOSS.md "Defaults" gives the measurements
and the experiment that reproduces them); the paper's settings are the preset "paper" (PRESETS), one flag away:
`train-student --distillation paper`, `distillation = "paper"` in an experiment's variant.
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
SCHEDULES = ("step", "linear", "auto")
"""How the teacher's weight changes over training (the module docstring)."""
PRESETS: dict[str, dict[str, Any]] = {
    "recommended": {},
    "paper": {"temperature": 6.0, "w_teacher": 0.6, "w_data": 0.4, "tail": "bucket", "schedule": "step",
              "transition_epoch": ALL_EPOCHS},
}
"""Named starting points for a DistillationSpec: "recommended" is the field defaults; "paper" the paper's
T = 6, weights 0.6/0.4, bucket tail, step schedule (its transition epoch, 14 small and 1 or 3 large, is given
beside the preset). Settings given with a preset override it."""
DEFAULT_PRESET = "recommended"


@dataclass
class DistillationSpec:
    """The teacher term's settings; defaults are the measured recommendation, PRESETS["paper"] the paper's."""

    temperature: float = 1.0
    """T of the teacher term (the paper: 6). Exact for temperatures listed in the store, bounded otherwise."""
    w_teacher: float = 0.6
    """w1, weight of T^2 * l_t (the paper: 0.6)."""
    w_data: float = 0.4
    """w2, weight of l_d (the paper: 0.4)."""
    tail: str = "bucket"
    """"bucket" (the teacher's tail mass as one extra outcome) or "renorm" (top-k renormalized)."""
    transition_epoch: int | str = ALL_EPOCHS
    """step schedule: superstill through this epoch, then plain l_d; "all" never switches (the paper: 14 small,
    1 or 3 large)."""
    schedule: str = "auto"
    """"step" (the paper's), "linear" or "auto" (see the module docstring)."""
    decay_start: float = 0.0
    """linear schedule: epochs of full teacher weight before the decay starts."""
    decay_epochs: float = 1.0
    """linear and auto schedules: epochs over which the teacher's weight falls to 0."""

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
        if self.schedule not in SCHEDULES:
            raise UserError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.schedule != "step" and self.transition_epoch != ALL_EPOCHS:
            raise UserError(f"transition_epoch belongs to the step schedule: set schedule step with it (or the "
                            f"paper preset); the {self.schedule} schedule uses decay_start and decay_epochs")
        if self.schedule == "auto" and self.decay_start != 0:
            raise UserError("decay_start belongs to the linear schedule; the auto schedule starts decaying when "
                            "the student catches up with the teacher")
        if not (math.isfinite(self.decay_start) and self.decay_start >= 0):
            raise UserError(f"decay_start must be a number of epochs >= 0, got {self.decay_start}")
        if not (math.isfinite(self.decay_epochs) and self.decay_epochs > 0):
            raise UserError(f"decay_epochs must be a number of epochs > 0, got {self.decay_epochs}")

    def decay_from(self, caught_up: float | None = None) -> float:
        """Epochs elapsed when the decay starts: decay_start (linear), when the student caught up with the
        teacher (auto; infinity until then)."""
        if self.schedule == "auto":
            return math.inf if caught_up is None else caught_up
        return self.decay_start

    def uses_teacher(self, epoch: int, caught_up: float | None = None) -> bool:
        """Whether any step of epoch `epoch` (1-based) has a teacher term (the loader reads rows only then)."""
        if self.schedule != "step":
            return epoch - 1 < self.decay_from(caught_up) + self.decay_epochs
        return self.transition_epoch == ALL_EPOCHS or epoch <= int(self.transition_epoch)

    def weights(self, epoch: int, elapsed: float, caught_up: float | None = None) -> tuple[float, float]:
        """(w1, w2) for a step of epoch `epoch` (1-based) taken after `elapsed` epochs of training; `caught_up`:
        when an auto schedule saw the student reach the teacher (None: not yet)."""
        if self.schedule != "step":
            kept = min(1.0, max(0.0, 1.0 - (elapsed - self.decay_from(caught_up)) / self.decay_epochs))
            return self.w_teacher * kept, self.w_data + self.w_teacher * (1.0 - kept)
        return (self.w_teacher, self.w_data) if self.uses_teacher(epoch) else (0.0, 1.0)

    def phase(self, epoch: int, elapsed: float, caught_up: float | None = None) -> str:
        """"full", "decaying" or "off": what the schedule does to the teacher's weight at this step."""
        w_teacher, _ = self.weights(epoch, elapsed, caught_up)
        return "off" if w_teacher == 0 else ("full" if w_teacher == self.w_teacher else "decaying")

    def phase_reason(self, phase: str, caught_up: float | None = None) -> str:
        """Why the schedule is in `phase`, for metrics.jsonl and the report."""
        if self.schedule == "step":
            if phase == "full":
                return f"step schedule: full teacher weight through epoch {self.transition_epoch}"
            return f"step schedule: transition epoch {self.transition_epoch} done, plain cross-entropy from here"
        if phase == "full":
            return f"{self.schedule} schedule: full teacher weight"
        if phase == "off":
            return f"{self.schedule} schedule: teacher weight reached 0, plain cross-entropy from here"
        start = (f"epoch {self.decay_start:g}" if self.schedule == "linear" else
                 f"epoch {caught_up:.3g}, when the student's held-out cross-entropy reached the teacher's")
        return f"{self.schedule} schedule: teacher weight decays to 0 over {self.decay_epochs:g} epochs from {start}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def preset_settings(table: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """`table`'s settings with its preset (the value under `key`, default DEFAULT_PRESET) filled in beneath
    them, for build_spec: {"distillation": "paper", "transition_epoch": 1} -> the paper's settings, epoch 1."""
    settings = dict(table)
    name = settings.pop(key, DEFAULT_PRESET)
    if not isinstance(name, str) or name not in PRESETS:
        raise UserError(f"{where} {key}: expected one of {', '.join(PRESETS)}, got {name!r}")
    return {**PRESETS[name], **settings}


def parse_transition_epoch(value: int | str) -> int | str:
    """"all" or a whole number >= 0 (text from the command line is parsed)."""
    if value == ALL_EPOCHS:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"transition_epoch must be an epoch number >= 0 or \"{ALL_EPOCHS}\", got {value!r}")
    return value
