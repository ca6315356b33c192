"""A training run's directory: run.json (resolved config), metrics.jsonl, steps.jsonl, checkpoint.pt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import UserError
from pipeline.storage import RUN, atomic_write_text, check_replaceable

if TYPE_CHECKING:
    from pipeline.distributed import DistContext

CHECKPOINT_FILE = "checkpoint.pt"


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.mirror = None  # a TensorBoardMirror when train.logger is tensorboard (rank 0)

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def prepare(self, resume: bool, force: bool, context: "DistContext") -> None:
        """Refuse to clobber anything unless --force, and then only a superstill run; --resume needs a checkpoint."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path} is a file; a run is a directory: choose another --out")
        if resume:
            if not self.checkpoint_path.is_file():
                raise UserError(f"--resume: no checkpoint in {self.path}; start the run without --resume")
            return
        if self.path.exists() and any(self.path.iterdir()):
            if not force:
                raise UserError(f"--out {self.path} already holds a run; pass --resume to continue it "
                                f"or --force to start over")
            check_replaceable(self.path, (RUN,))
            context.barrier()  # every rank has checked before rank 0 deletes
            if context.is_main:
                shutil.rmtree(self.path)
        if context.is_main:
            self.path.mkdir(parents=True, exist_ok=True)
        context.barrier()

    def write_run(self, record: dict[str, Any], event: dict[str, Any], resumed: bool) -> None:
        """run.json: the run's settings, plus a history with one entry per start and resume.

        A resume keeps the earlier entries (run identity guarantees the settings that define the run are
        unchanged; what may change, such as epochs or device, is in each entry)."""
        history = []
        if resumed and self.run_path.is_file():
            try:
                history = list(json.loads(self.run_path.read_text(encoding="utf-8")).get("history", []))
            except (ValueError, AttributeError):
                history = [{"event": "unreadable earlier run.json"}]
        record = {**record, "history": history + [event]}
        atomic_write_text(self.run_path, json.dumps(record, indent=2, sort_keys=True) + "\n")

    @property
    def run_path(self) -> Path:
        return self.path / "run.json"

    def append_metrics(self, record: dict[str, Any]) -> None:
        self._append(self.metrics_path, record)
        if self.mirror is not None:
            self.mirror.write(record.get("event", ""), record, record.get("tokens_seen", 0))

    def append_step(self, record: dict[str, Any]) -> None:
        self._append(self.path / "steps.jsonl", record)
        if self.mirror is not None:
            self.mirror.write("step", record, record.get("tokens_seen", 0))

    @staticmethod
    def _append(path: Path, record: dict[str, Any]) -> None:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def epochs(self) -> list[dict[str, Any]]:
        """Epoch records, last one per epoch winning (a resumed epoch may appear twice)."""
        return read_epochs(self.metrics_path, []) if self.metrics_path.is_file() else []

    def finished(self, epochs: int) -> bool:
        done = self.epochs()
        return self.checkpoint_path.is_file() and bool(done) and done[-1]["epoch"] >= epochs


def read_epochs(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """The "epoch" events of a metrics.jsonl, deduplicated by epoch (last wins), sorted by epoch."""
    return latest_epochs(read_events(path, notes))


def latest_epochs(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The "epoch" events among `events`, one per epoch (the last written wins), sorted by epoch."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for event in events:
        if event.get("event") == "epoch" and isinstance(event.get("epoch"), int):
            by_epoch[event["epoch"]] = event
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def read_events(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """Every JSON object of a metrics.jsonl, in file order.

    A truncated final line (a run killed mid-write) is skipped with a note; a bad line elsewhere is an error.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    events: list[dict[str, Any]] = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            if index == len(lines) - 1:
                notes.append(f"{path}: skipped a truncated last line (the run was probably interrupted mid-write).")
                continue
            raise UserError(f"{path} line {index + 1} is not valid JSON; repair or delete that line") from None
        if isinstance(event, dict):
            events.append(event)
    return events
