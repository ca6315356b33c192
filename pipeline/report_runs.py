"""Reading a (possibly unfinished) experiment directory for the report.

Layout read (written by `pipeline experiment` and the training stages):

    RUN/experiment.json                 optional; "name", "students": [{"name": ...}, ...] (names and order),
                                        "seeds": [0, 1, 2] (the seeds planned)
    RUN/teacher/                        a run directory (one seed)
    RUN/students/<name>/seed-<s>/       run directories: the baseline and each superstilled variant, one per
                                        seed s (= its train.seed); runs of one seed share initialization and
                                        data order, so a variant is paired with the baseline of its seed
    RUN/students/<name>/                older layout: itself a run directory, one seed (its train.seed)
    RUN/teacher-logits/                 the logit store; only its group attributes["superstill"] are read

A run directory holds run.json (kind, name, model, train, superstill, parameters) and metrics.jsonl, one
JSON object per line: "epoch" events (the per-epoch evaluations; the last one wins when a resumed run
repeated an epoch), "eval" events (every evaluation, several per epoch and one at each epoch end; the last
one per step wins) and "schedule" events (the teacher weight changed phase). Runs written before "eval"
events existed have epoch events only: their curve is the epoch events. Anything missing is tolerated and
recorded as a note for the report, so a report can be drawn while an experiment is still running.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable


from pipeline.config import architecture_label
from pipeline.errors import UserError
from pipeline.run_dir import latest_epochs, read_events
from pipeline.seed_statistics import seed_order
from pipeline.storage import exists, local_path

RUN_FILE, METRICS_FILE = "run.json", "metrics.jsonl"
SEED_DIR = re.compile(r"seed-(\d+)")
"""students/<name>/seed-<s>/: one seed's run of a model."""


@dataclass
class RunResult:
    """One trained model at one seed: its run.json and its evaluations."""

    name: str
    kind: str
    """"teacher", "baseline" or "student" (superstilled)."""
    directory: Path
    info: dict[str, Any]
    """run.json as written."""
    epochs: list[dict[str, Any]] = field(default_factory=list)
    """"epoch" events, one per epoch (the last written wins), sorted by epoch."""
    evals: list[dict[str, Any]] = field(default_factory=list)
    """"eval" events, one per step (the last written wins), sorted by tokens seen; empty for older runs."""
    schedule: list[dict[str, Any]] = field(default_factory=list)
    """"schedule" events (teacher-weight phase changes) sorted by step; a repeat of the phase before dropped."""

    @property
    def seed(self) -> Hashable:
        """train.seed from run.json (else from a seed-<s> directory name); None when neither says."""
        value = (self.info.get("train") or {}).get("seed")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        match = SEED_DIR.fullmatch(self.directory.name)
        return int(match.group(1)) if match else None

    @property
    def parameters(self) -> int | None:
        value = self.info.get("parameters")
        return int(value) if isinstance(value, (int, float)) and value > 0 else None

    @property
    def planned_epochs(self) -> int | None:
        value = (self.info.get("train") or {}).get("epochs")
        return value if isinstance(value, int) else None

    @property
    def superstill(self) -> dict[str, Any] | None:
        value = self.info.get("superstill")
        return value if isinstance(value, dict) else None

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        """The fine-grained curve: the "eval" events, or the epoch events for runs that have none."""
        return self.evals or self.epochs

    def points(self, *keys: str, fine: bool = False) -> list[tuple[float, ...]]:
        """Per evaluation (epoch events, or `evaluations` if fine), the values of `keys` where all are finite
        numbers (missing or diverged points dropped)."""
        rows = []
        for event in self.evaluations if fine else self.epochs:
            values = tuple(number(event.get(key)) for key in keys)
            if all(value is not None for value in values):
                rows.append(values)
        return rows

    def curve(self, x_key: str, y_key: str, fine: bool = False) -> tuple[list[float], list[float]]:
        """(x, y) as two lists over the evaluations that have both."""
        rows = self.points(x_key, y_key, fine=fine)
        return [row[0] for row in rows], [row[1] for row in rows]

    def value_at(self, epoch: int, key: str) -> float | None:
        for event in self.epochs:
            if event.get("epoch") == epoch:
                return number(event.get(key))
        return None

    def last(self, key: str) -> float | None:
        """The value of `key` at the last epoch that has it."""
        xs, ys = self.curve("epoch", key)
        return ys[-1] if ys else None

    def eval_seconds(self) -> float | None:
        """Total evaluation time (the eval events' eval_time_s); None for runs that did not log it."""
        times = [number(e.get("eval_time_s")) for e in self.evals]
        times = [t for t in times if t is not None]
        return sum(times) if times else None


def teacher_on(event: dict[str, Any]) -> bool:
    """Whether the teacher term was active at an evaluation: superstilling, and a weight above 0 if logged."""
    weight = number(event.get("w_teacher"))
    return bool(event.get("superstill")) and (weight is None or weight > 0)


@dataclass
class ModelRuns:
    """One model of the experiment (the teacher, the baseline or a variant) over its seeds."""

    name: str
    kind: str
    runs: list[RunResult]
    """One per seed, in seed order; at least one."""

    @property
    def seeds(self) -> list[Hashable]:
        return [run.seed for run in self.runs]

    @property
    def first(self) -> RunResult:
        """The lowest seed's run: what every seed shares (model, parameters, settings) is read from it."""
        return self.runs[0]

    @property
    def parameters(self) -> int | None:
        return self.first.parameters

    @property
    def spec(self) -> dict[str, Any]:
        """The model spec run.json records (every seed trains the same one)."""
        value = self.first.info.get("model")
        return value if isinstance(value, dict) else {}

    @property
    def architecture(self) -> str:
        """"gpt", "hf:llama", "factory:my_models:build" (pipeline/config.py architecture_label)."""
        return architecture_label(self.spec)

    def run(self, seed: Hashable) -> RunResult | None:
        return next((run for run in self.runs if run.seed == seed), None)

    def by_tokens(self, key: str, fine: bool = True) -> list[tuple[float, dict[Hashable, float]]]:
        """Per token count evaluated by any seed (ascending): {seed: value of `key`} over the seeds that have
        a finite value there. Runs of one experiment evaluate at the same token counts, so this aligns seeds."""
        found: dict[float, dict[Hashable, float]] = {}
        for run in self.runs:
            for tokens, value in run.points("tokens_seen", key, fine=fine):
                found.setdefault(tokens, {})[run.seed] = value
        return sorted(found.items())

    def event_at(self, tokens: float) -> dict[str, Any] | None:
        """The lowest seed's evaluation at `tokens` (fine-grained curve), if any seed has one."""
        for run in self.runs:
            for event in run.evaluations:
                if number(event.get("tokens_seen")) == tokens:
                    return event
        return None

    def epoch_end(self, tokens: float) -> int | None:
        """The epoch that ends at `tokens`, or None for an evaluation inside an epoch."""
        for run in self.runs:
            for epoch, seen in run.points("epoch", "tokens_seen"):
                if seen == tokens:
                    return int(epoch)
        return None

    @property
    def tokens_per_epoch(self) -> float | None:
        """Tokens of one epoch (every epoch has the same windows): the first epoch's, once one has ended."""
        for run in self.runs:
            for epoch, seen in run.points("epoch", "tokens_seen"):
                if epoch == 1:
                    return seen
        return None

    def by_epoch(self, key: str) -> dict[int, dict[Hashable, float]]:
        """Per epoch (ascending): {seed: value of `key` at that epoch's end}."""
        found: dict[int, dict[Hashable, float]] = {}
        for run in self.runs:
            for epoch, value in run.points("epoch", key):
                found.setdefault(int(epoch), {})[run.seed] = value
        return dict(sorted(found.items()))


@dataclass
class Experiment:
    """Everything the report draws from: models in experiment order, the logit store's stats, notes."""

    directory: Path
    name: str
    teacher: ModelRuns | None
    students: list[ModelRuns]
    """Baselines and superstilled variants, in the order experiment.json lists them."""
    planned_seeds: list[Hashable] | None
    """experiment.json's "seeds", when it lists them."""
    store: dict[str, Any] | None
    """The logit store's attributes["superstill"], or None when it could not be read."""
    store_path: str | None
    notes: list[str]
    """What was missing or skipped, one line each, for the report's Notes section."""

    @property
    def models(self) -> list[ModelRuns]:
        return ([self.teacher] if self.teacher else []) + self.students


def number(value: Any) -> float | None:
    """A finite float, or None for missing/non-numeric/NaN/inf (a diverged evaluation is not a point)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error}); re-run the stage that wrote it or delete it") from None


def read_run(directory: Path, default_kind: str, notes: list[str]) -> RunResult | None:
    """A run directory, or None (with a note) when it has no run.json yet."""
    if not (directory / RUN_FILE).is_file():
        notes.append(f"{directory}: no {RUN_FILE} yet (not started?); left out.")
        return None
    info = _read_json(directory / RUN_FILE)
    if not isinstance(info, dict):
        raise UserError(f"{directory / RUN_FILE} must hold a JSON object; re-run the stage that wrote it")
    events = read_events(directory / METRICS_FILE, notes) if (directory / METRICS_FILE).is_file() else []
    epochs = latest_epochs(events)
    if not epochs:
        notes.append(f"{directory}: no epoch evaluations yet.")
    name = str(info.get("name") or directory.name)
    return RunResult(name, str(info.get("kind") or default_kind), directory, info, epochs,
                     _latest(events, "eval", ("step", "tokens_seen"), "tokens_seen"),
                     _phase_changes(_latest(events, "schedule", ("step", "phase", "reason"), "step")))


def _latest(events: list[dict[str, Any]], kind: str, identity: tuple[str, ...], order: str) -> list[dict[str, Any]]:
    """Events of `kind`, one per value of the `identity` fields (the last written wins: a resumed run repeats
    what it logged after its checkpoint), sorted by the number in `order` (events without one dropped)."""
    latest: dict[tuple, dict[str, Any]] = {}
    for event in events:
        if event.get("event") == kind and number(event.get(order)) is not None:
            latest[tuple(str(event.get(key)) for key in identity)] = event
    return sorted(latest.values(), key=lambda e: number(e.get(order)))


def _phase_changes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop a schedule event that repeats the phase before it: a resumed run logs its current phase again."""
    kept: list[dict[str, Any]] = []
    for event in events:
        if not kept or event.get("phase") is None or event.get("phase") != kept[-1].get("phase"):
            kept.append(event)
    return kept


def read_model(directory: Path, default_kind: str, notes: list[str]) -> ModelRuns | None:
    """students/<name>/: its seed-<s>/ run directories, or the directory itself (the older one-seed layout);
    None (with a note) when no run has started."""
    older = (directory / RUN_FILE).is_file()
    if older:
        seeds = [directory]
    else:
        seeds = [p for p in sorted(directory.iterdir()) if p.is_dir() and SEED_DIR.fullmatch(p.name)]
        if not seeds:
            notes.append(f"{directory}: no {RUN_FILE} or seed-<s>/{RUN_FILE} yet (not started?); left out.")
            return None
    runs = [run for path in seeds if (run := read_run(path, default_kind, notes)) is not None]
    if not runs:
        return None
    runs.sort(key=lambda run: seed_order(run.seed))
    seen = [run.seed for run in runs]
    if len(set(seen)) < len(seen):
        raise UserError(f"{directory}: two runs record the same train.seed ({seen}); each seed-<s>/ must hold "
                        "the run of seed s: delete or rename the stray one")
    # The seed layout is named by its directory (as experiment.json lists it); the older one by its run.json.
    return ModelRuns(runs[0].name if older else directory.name, runs[0].kind, runs)


def _student_names(directory: Path, config: dict[str, Any] | None) -> list[str]:
    """Students in experiment.json order, then any other directory under students/ (sorted)."""
    entries = (config or {}).get("students")
    listed = [str(s["name"]) for s in (entries if isinstance(entries, list) else [])
              if isinstance(s, dict) and "name" in s]
    root = directory / "students"
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    return listed + [name for name in found if name not in listed]


def _store_candidates(directory: Path, students: list[ModelRuns]) -> list[str]:
    """RUN/teacher-logits, then the stores the students say they read (URLs as given; local paths as given,
    then relative to RUN)."""
    candidates = [str(directory / "teacher-logits")]
    for run in (run for model in students for run in model.runs):
        location = (run.superstill or {}).get("teacher_logits")
        if not isinstance(location, str) or not location:
            continue
        path = local_path(location)
        candidates += [location] if path is None or path.is_absolute() else [str(path), str(directory / path)]
    return list(dict.fromkeys(candidates))


def read_store_stats(directory: Path, students: list[ModelRuns], notes: list[str]) -> tuple[dict | None, str | None]:
    """The logit store's metadata, tolerating a missing or unfinished store (local or a URL such as s3://).
    A damaged one (missing shard files, malformed metadata) is not read: the report says so in its notes."""
    from pipeline.logit_store import LogitStore

    for location in _store_candidates(directory, students):
        try:
            if not exists(location):
                continue
            store = LogitStore.open(location, require_complete=False, option="logit store")
        except UserError as error:
            notes.append(f"The logit store is damaged or unreadable, its figures are not used: {error}")
            continue
        return store.meta.to_dict(), location
    notes.append("No teacher logit store found: dump costs are n/a.")
    return None, None


def load_experiment(location: str) -> Experiment:
    """Read RUN; UserError if it does not exist or holds no runs at all."""
    path = local_path(location)
    if path is None:
        raise UserError(f"RUN {location}: the report needs a local experiment directory, not a URL; copy it locally first")
    if not path.is_dir():
        raise UserError(f"RUN {location} does not exist or is not a directory; pass the directory `pipeline experiment` wrote")
    notes: list[str] = []
    config = _read_json(path / "experiment.json") if (path / "experiment.json").is_file() else None
    if config is not None and not isinstance(config, dict):
        raise UserError(f"{path / 'experiment.json'} must hold a JSON object; re-run `pipeline experiment`")
    teacher = read_model(path / "teacher", "teacher", notes) if (path / "teacher").is_dir() else None
    students = [model for name in _student_names(path, config)
                if (model := read_model(path / "students" / name, "student", notes)) is not None]
    if teacher is None and not students:
        raise UserError(f"RUN {location} holds no runs (no teacher/{RUN_FILE} or students/*/{RUN_FILE}); "
                        "pass an experiment directory that has started training")
    planned = _planned_seeds(config, path)
    _note_missing_seeds(students, planned, notes)
    store, store_path = read_store_stats(path, students, notes)
    name = str((config or {}).get("name") or path.name)
    return Experiment(path, name, teacher, students, planned, store, store_path, notes)


def _planned_seeds(config: dict[str, Any] | None, path: Path) -> list[Hashable] | None:
    """experiment.json's "seeds" (a list of integers), or None when it lists none."""
    seeds = (config or {}).get("seeds")
    if seeds is None:
        return None
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise UserError(f"{path / 'experiment.json'}: \"seeds\" must be a list of integers, got {seeds!r}; "
                        "re-run `pipeline experiment`")
    return list(seeds)


def _note_missing_seeds(students: list[ModelRuns], planned: list[Hashable] | None, notes: list[str]) -> None:
    """A note per model that lacks some planned seed: its statistics are over fewer seeds."""
    for model in students:
        missing = [s for s in planned or [] if s not in model.seeds]
        if missing:
            notes.append(f"{model.name}: no run yet for seed(s) {', '.join(map(str, missing))}; its statistics "
                         f"use seed(s) {', '.join(map(str, model.seeds))}.")
