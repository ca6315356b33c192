"""Experiment files: the paper's whole protocol (tokenize -> teacher -> dump -> students -> report) as data.

An experiment is a TOML file (see pipeline/experiments/*.toml, usable by name: `pipeline experiment demo`).
Every table is validated on load, so a typo fails in the first second, not after the teacher trained.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline.config import PRESETS, resolve
from pipeline.errors import UserError


@dataclass
class ModelStage:
    """A model to train: a preset plus overrides."""

    preset: str
    epochs: int
    model: dict[str, Any] = field(default_factory=dict)
    """Overrides of ModelConfig fields."""
    train: dict[str, Any] = field(default_factory=dict)
    """Overrides of TrainConfig fields."""

    def overrides(self) -> dict[str, dict[str, Any]]:
        return {"model": dict(self.model), "train": {**self.train, "epochs": self.epochs}}

    def validate(self, where: str) -> None:
        if self.preset not in PRESETS:
            raise UserError(f"{where}.preset {self.preset!r} is unknown; choose one of {', '.join(PRESETS)}")
        try:
            resolve(self.preset, self.overrides())
        except UserError as error:
            raise UserError(f"{where}: {error}") from None


@dataclass
class DumpStage:
    """How the teacher's distribution is stored (see `pipeline dump-teacher --help`)."""

    top_k: int = 64
    temperatures: list[float] = field(default_factory=lambda: [1.0, 6.0])
    stride: int = 0
    """0 = the teacher's context (non-overlapping windows)."""
    batch_size: int = 32
    codec: str | None = None


@dataclass
class Variant:
    """One superstilled student (all share the student preset and the store)."""

    name: str
    temperature: float = 6.0
    transition_epoch: int | str = "all"
    """Superstill through this epoch, then plain cross-entropy; "all" = never switch."""
    w_teacher: float = 0.6
    w_data: float = 0.4
    tail: str = "bucket"

    def __post_init__(self) -> None:
        if not self.name.replace("-", "").replace("_", "").isalnum() or self.name == "baseline":
            raise UserError(f"variant name {self.name!r}: use letters, digits, - and _ (and not 'baseline')")
        if self.temperature <= 0:
            raise UserError(f"variant {self.name}: temperature must be positive")
        if self.tail not in ("bucket", "renorm"):
            raise UserError(f"variant {self.name}: tail must be bucket or renorm")
        if not (self.transition_epoch == "all" or (isinstance(self.transition_epoch, int) and self.transition_epoch >= 0)):
            raise UserError(f"variant {self.name}: transition_epoch must be a non-negative integer or \"all\"")


@dataclass
class ExperimentConfig:
    name: str
    corpus: list[str]
    """Text files/directories; relative paths are relative to the working directory."""
    teacher: ModelStage
    student: ModelStage
    variants: list[Variant]
    tokenize: dict[str, Any] = field(default_factory=dict)
    """Options of `pipeline tokenize` (vocab_size, val_fraction, seed, lowercase, workers)."""
    dump: DumpStage = field(default_factory=DumpStage)
    baseline: bool = True
    """Also train the same-size baseline (plain cross-entropy, same data order)."""
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> "ExperimentConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UserError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        try:
            config = cls(
                name=data["name"], corpus=list(data["corpus"]), description=data.get("description", ""),
                teacher=_table(ModelStage, data["teacher"], f"{source} [teacher]"),
                student=_table(ModelStage, data["student"], f"{source} [student]"),
                variants=[_table(Variant, v, f"{source} [[variants]]") for v in data.get("variants", [])],
                tokenize=dict(data.get("tokenize", {})), dump=_table(DumpStage, data.get("dump", {}), f"{source} [dump]"),
                baseline=data.get("baseline", True))
        except KeyError as error:
            raise UserError(f"{source}: missing key {error.args[0]!r}") from None
        config.teacher.validate(f"{source} [teacher]")
        config.student.validate(f"{source} [student]")
        names = [v.name for v in config.variants]
        if len(set(names)) != len(names):
            raise UserError(f"{source}: variant names must be unique, got {names}")
        return config


def _table(cls, values: dict[str, Any], where: str):
    """Build a dataclass from a TOML table, naming unknown or missing keys."""
    fields = dataclasses.fields(cls)
    unknown = set(values) - {f.name for f in fields}
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(f.name for f in fields)}")
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in values]
    if missing:
        raise UserError(f"{where}: missing key(s) {', '.join(missing)}")
    return cls(**values)


def builtin_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("pipeline.experiments").iterdir() if p.name.endswith(".toml"))


def load_experiment(name_or_path: str) -> ExperimentConfig:
    """A TOML file path, or the name of a shipped experiment (demo, paper-small, paper-large)."""
    path = Path(name_or_path)
    if not path.is_file():
        if name_or_path in builtin_names():
            text, source = resources.files("pipeline.experiments").joinpath(f"{name_or_path}.toml").read_text(), name_or_path
        else:
            raise UserError(f"CONFIG {name_or_path}: no such file or shipped experiment ({', '.join(builtin_names())})")
    else:
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{source}: not valid TOML ({error})") from None
    return ExperimentConfig.from_dict(data, source)
