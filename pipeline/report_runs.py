"""Reading a (possibly unfinished) experiment directory for the report.

Layout read (written by `pipeline experiment` and the training stages):

    RUN/experiment.json            optional; "name" and "students": [{"name": ...}, ...] give names and order
    RUN/teacher/                   a run directory
    RUN/students/<name>/           run directories: the baseline and the superstilled students
    RUN/teacher-logits/            the logit store; only its group attributes["superstill"] are read

A run directory holds run.json (kind, name, model, train, superstill, parameters) and metrics.jsonl
(one JSON object per line; "event": "epoch" lines are the per-epoch evaluations, last one wins when a
resumed run repeated an epoch). Anything missing is tolerated and recorded as a note for the report,
so a report can be drawn while an experiment is still running.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zarr

from pipeline.errors import UserError
from pipeline.run_dir import read_epochs
from pipeline.storage import local_path

RUN_FILE, METRICS_FILE = "run.json", "metrics.jsonl"


@dataclass
class RunResult:
    """One trained model: its run.json and its per-epoch evaluations, sorted by epoch."""

    name: str
    kind: str
    """"teacher", "baseline" or "student" (superstilled)."""
    directory: Path
    info: dict[str, Any]
    """run.json as written."""
    epochs: list[dict[str, Any]] = field(default_factory=list)
    """"epoch" events, one per epoch (the last written wins), sorted by epoch."""

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

    def points(self, *keys: str) -> list[tuple[float, ...]]:
        """Per epoch, the values of `keys` where all are finite numbers (missing or diverged points dropped)."""
        rows = []
        for event in self.epochs:
            values = tuple(number(event.get(key)) for key in keys)
            if all(value is not None for value in values):
                rows.append(values)
        return rows

    def curve(self, x_key: str, y_key: str) -> tuple[list[float], list[float]]:
        """(x, y) as two lists over the epochs that have both."""
        rows = self.points(x_key, y_key)
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


@dataclass
class Experiment:
    """Everything the report draws from: runs in experiment order, the logit store's stats, notes."""

    directory: Path
    name: str
    teacher: RunResult | None
    students: list[RunResult]
    """Baselines and superstilled students, in the order experiment.json lists them."""
    store: dict[str, Any] | None
    """The logit store's attributes["superstill"], or None when it could not be read."""
    store_path: Path | None
    notes: list[str]
    """What was missing or skipped, one line each, for the report's Notes section."""

    @property
    def runs(self) -> list[RunResult]:
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
    epochs: list[dict[str, Any]] = []
    if (directory / METRICS_FILE).is_file():
        epochs = read_epochs(directory / METRICS_FILE, notes)
    if not epochs:
        notes.append(f"{directory}: no epoch evaluations yet.")
    name = str(info.get("name") or directory.name)
    return RunResult(name, str(info.get("kind") or default_kind), directory, info, epochs)


def _student_names(directory: Path, config: dict[str, Any] | None) -> list[str]:
    """Students in experiment.json order, then any other directory under students/ (sorted)."""
    entries = (config or {}).get("students")
    listed = [str(s["name"]) for s in (entries if isinstance(entries, list) else [])
              if isinstance(s, dict) and "name" in s]
    root = directory / "students"
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    return listed + [name for name in found if name not in listed]


def _store_candidates(directory: Path, students: list[RunResult]) -> list[Path]:
    """RUN/teacher-logits, then the stores the students say they read (as given, then relative to RUN)."""
    candidates = [directory / "teacher-logits"]
    for run in students:
        location = (run.superstill or {}).get("teacher_logits")
        path = local_path(location) if isinstance(location, str) and location else None
        if path is not None:
            candidates += [path, directory / path] if not path.is_absolute() else [path]
    return candidates


def read_store_stats(directory: Path, students: list[RunResult], notes: list[str]) -> tuple[dict | None, Path | None]:
    """The logit store's attributes["superstill"], tolerating a missing or unfinished store. A damaged one
    (missing shard files, malformed metadata) is not read: the report says so in its notes."""
    from pipeline.logit_store import LogitStore

    for path in _store_candidates(directory, students):
        if not path.exists():
            continue
        try:
            LogitStore.open(str(path), require_complete=False, option="logit store")
        except UserError as error:
            notes.append(f"The logit store is damaged, its figures are not used: {error}")
            continue
        try:
            attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
        except Exception as error:  # any unreadable store is reported, not fatal: the report is diagnostic
            notes.append(f"{path}: could not read the logit store's attributes ({type(error).__name__}: {error}).")
            continue
        stats = attrs.get("superstill")
        if isinstance(stats, dict):
            return stats, path
        notes.append(f"{path}: the logit store has no 'superstill' attributes (unfinished dump?).")
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
    teacher = read_run(path / "teacher", "teacher", notes) if (path / "teacher").is_dir() else None
    students = [run for name in _student_names(path, config)
                if (run := read_run(path / "students" / name, "student", notes)) is not None]
    if teacher is None and not students:
        raise UserError(f"RUN {location} holds no runs (no teacher/{RUN_FILE} or students/*/{RUN_FILE}); "
                        "pass an experiment directory that has started training")
    store, store_path = read_store_stats(path, students, notes)
    name = str((config or {}).get("name") or path.name)
    return Experiment(path, name, teacher, students, store, store_path, notes)
