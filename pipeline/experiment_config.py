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
from pipeline.distillation import DistillationSpec, preset_settings
from pipeline.dump_spec import DumpSpec, check_sampled_temperature
from pipeline.errors import UserError
from pipeline.spec_parsing import build_spec, coerce


@dataclass
class ModelStage:
    """A model to train: a preset plus overrides."""

    preset: str
    """A preset name (pipeline.config.PRESETS)."""
    epochs: int
    """Passes over the training split."""
    model: dict[str, Any] = field(default_factory=dict)
    """Overrides of ModelConfig fields."""
    train: dict[str, Any] = field(default_factory=dict)
    """Overrides of TrainConfig fields."""

    def overrides(self) -> dict[str, dict[str, Any]]:
        return {"model": dict(self.model), "train": {**self.train, "epochs": self.epochs}}

    def validate(self, where: str) -> None:
        """Type-check and range-check every override now, not after the stages before this one ran."""
        if self.preset not in PRESETS:
            raise UserError(f"{where} preset {self.preset!r} is unknown; choose one of {', '.join(PRESETS)}")
        resolve(self.preset, self.overrides(), where)


TOKENIZE_KEYS = ("vocab_size", "val_fraction", "seed", "lowercase", "workers")
"""Options of `pipeline tokenize` an experiment's [tokenize] table may set."""


BASELINE = "baseline"
"""The default student's baseline; an architecture NAME's is "baseline-NAME"."""


def baseline_name(architecture: str | None) -> str:
    return BASELINE if architecture is None else f"{BASELINE}-{architecture}"


def _check_name(name: str, what: str) -> str:
    if not name.replace("-", "").replace("_", "").isalnum() or name == BASELINE or name.startswith(BASELINE + "-"):
        raise UserError(f"{what} name {name!r}: use letters, digits, - and _ (and not 'baseline' or 'baseline-...')")
    return name


@dataclass
class Variant:
    """One superstilled student; all read the same store."""

    name: str
    """Its directory under students/: letters, digits, - and _."""
    distillation: DistillationSpec = field(default_factory=DistillationSpec)
    """Its teacher term (the table's other keys: DistillationSpec's fields, over the preset named by
    `distillation`, "recommended" or "paper", default "recommended")."""
    student: str | None = None
    """The key of an [architectures.NAME] table: the student model it trains (default: [student])."""

    def __post_init__(self) -> None:
        _check_name(self.name, "variant")

    @classmethod
    def from_table(cls, table: dict[str, Any], where: str) -> "Variant":
        if not isinstance(table, dict) or "name" not in table:
            raise UserError(f"{where}: each [[variants]] table needs a name")
        name = coerce(table["name"], str, f"{where} name")
        settings = preset_settings({k: v for k, v in table.items() if k not in ("name", "student")}, "distillation",
                                   f"{where} {name}")
        student = coerce(table["student"], str, f"{where} {name} student") if "student" in table else None
        return cls(name, build_spec(DistillationSpec, settings, f"{where} {name}"), student)

    def settings(self) -> dict[str, Any]:
        """Flat, as written in the file (and as the experiment's stage keys hash it)."""
        return {"name": self.name, **({"student": self.student} if self.student else {}),
                **self.distillation.to_dict()}


@dataclass
class ExperimentConfig:
    name: str
    corpus: list[str]
    """Text files/directories; relative paths are relative to the working directory."""
    teacher: ModelStage
    student: ModelStage
    """The default student model (variants without `student = ...` and the "baseline")."""
    variants: list[Variant]
    architectures: dict[str, ModelStage] = field(default_factory=dict)
    """More student models by name ([architectures.NAME] tables, like [student]): a variant picks one with
    `student = "NAME"`, and each trains its own baseline, students/baseline-NAME/, for the report to compare
    against (same architecture, same seed, same data order)."""
    tokenize: dict[str, Any] = field(default_factory=dict)
    """Options of `pipeline tokenize` (TOKENIZE_KEYS)."""
    dump: DumpSpec = field(default_factory=DumpSpec)
    """How the teacher's distribution is stored: the options of `pipeline dump-teacher`."""
    baseline: bool = True
    """Also train the same-size baseline of each student model (plain cross-entropy, same data order)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Student seeds: the baseline and every variant train once per seed (students/NAME/seed-S/), paired by
    seed (same initialization and data order within a seed); the teacher and its store are made once."""
    description: str = ""

    def student_model(self, architecture: str | None) -> ModelStage:
        """The [student] table (None) or [architectures.NAME]."""
        return self.student if architecture is None else self.architectures[architecture]

    def students(self) -> list[tuple[str, Variant | None, str | None]]:
        """(directory name, variant or None for a baseline, architecture or None for [student]) in training
        order: each baseline, then the variants."""
        baselines = [(baseline_name(a), None, a) for a in (None, *self.architectures)] if self.baseline else []
        return baselines + [(v.name, v, v.student) for v in self.variants]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["variants"] = [variant.settings() for variant in self.variants]
        data["students"] = [{"name": name, "architecture": architecture or "student"}  # the report's order
                            for name, _, architecture in self.students()]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> "ExperimentConfig":
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise UserError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
        missing = [key for key in ("name", "corpus", "teacher", "student") if key not in data]
        if missing:
            raise UserError(f"{source}: missing key(s) {', '.join(missing)}")
        tables = [coerce(v, dict, f"{source} [[variants]]") for v in coerce(data.get("variants", []), list,
                                                                             f"{source} variants")]
        config = cls(
            name=coerce(data["name"], str, f"{source} name"), corpus=coerce(data["corpus"], list[str], f"{source} corpus"),
            description=coerce(data.get("description", ""), str, f"{source} description"),
            teacher=build_spec(ModelStage, data["teacher"], f"{source} [teacher]"),
            student=build_spec(ModelStage, data["student"], f"{source} [student]"),
            variants=[Variant.from_table(t, f"{source} [[variants]]") for t in tables],
            architectures=_architectures(data.get("architectures", {}), f"{source} [architectures]"),
            tokenize=_tokenize_table(data.get("tokenize", {}), f"{source} [tokenize]"),
            dump=build_spec(DumpSpec, data.get("dump", {}), f"{source} [dump]"),
            baseline=coerce(data.get("baseline", True), bool, f"{source} baseline"),
            seeds=coerce(data.get("seeds", [0]), list[int], f"{source} seeds"))
        check_seeds(config.seeds, f"{source} seeds")
        if any("seed" in stage.train for stage in (config.student, *config.architectures.values())):
            raise UserError(f"{source} [student.train] seed: student seeds come from `seeds = [...]` (one run each); "
                            f"remove it")
        config.teacher.validate(f"{source} [teacher]")
        config.student.validate(f"{source} [student]")
        if config.dump.rows == "sampled":  # sampled rows train only at their sampling temperature
            for variant in config.variants:
                check_sampled_temperature(config.dump.sample_temperature, variant.distillation.temperature,
                                          f"{source} [[variants]] {variant.name} temperature")
        for variant in config.variants:
            if variant.student is not None and variant.student not in config.architectures:
                raise UserError(f"{source} [[variants]] {variant.name} student {variant.student!r}: no "
                                f"[architectures.{variant.student}] table; known: "
                                f"{', '.join(config.architectures) or 'none (add one)'}")
        names = [v.name for v in config.variants]
        if len(set(names)) != len(names):
            raise UserError(f"{source}: variant names must be unique, got {names}")
        return config


def _architectures(table: Any, where: str) -> dict[str, ModelStage]:
    """[architectures.NAME] tables, each a validated ModelStage."""
    stages = {}
    for name, value in coerce(table, dict, where).items():
        label = f"{where[:-1]}.{_check_name(name, 'architecture')}]"
        stages[name] = build_spec(ModelStage, value, label)
        stages[name].validate(label)
    return stages


def check_seeds(seeds: list[int], where: str) -> list[int]:
    """At least one seed, each >= 0, no repeats."""
    if not seeds or any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"{where}: give one or more distinct seeds >= 0, e.g. [0, 1, 2]; got {seeds}")
    return seeds


def _tokenize_table(table: Any, where: str) -> dict[str, Any]:
    """The [tokenize] table's keys; its values are type-checked when the experiment plans its stages
    (against `pipeline tokenize`'s own settings, stages/tokenize.py), before any stage runs."""
    table = coerce(table, dict, where)
    unknown = sorted(set(table) - set(TOKENIZE_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(TOKENIZE_KEYS)}")
    return dict(table)


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
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{source}: not valid TOML ({error})") from None
    return ExperimentConfig.from_dict(data, source)
