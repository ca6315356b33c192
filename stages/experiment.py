"""`pipeline experiment`: the paper's protocol end to end, each stage in its own subdirectory of RUN.

    RUN/experiment.json      the resolved experiment
    RUN/state.json           per stage: a key (sha256 of its settings and its inputs' keys) and done/not
    RUN/tokens/              token store            RUN/teacher/         teacher run
    RUN/teacher-logits/      logit store            RUN/students/NAME/   baseline and superstilled students
    RUN/report.md, RUN/figures/

A stage whose key matches a finished one is skipped; an unfinished one with the same key is resumed; one
whose key changed (the file was edited) is refused unless --force, which redoes it and everything that
depends on it. So an interrupted experiment continues when the same command is run again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.errors import UserError
from pipeline.experiment_config import ExperimentConfig, load_experiment
from pipeline.progress import log
from pipeline.run_dir import RunDir
from pipeline.storage import atomic_write_text


@dataclass
class ExperimentRunConfig:
    experiment: str
    """Experiment file or shipped name."""
    out: str
    """Run directory."""
    corpus: list[str] | None = None
    """Replace the experiment's corpus paths."""
    force: bool = False
    """Redo stages whose settings changed (and everything after them)."""
    stop_after: str | None = None
    """Stop after this stage (tokens, teacher, teacher-logits, a student name); for staged runs and tests."""


def _key(settings: Any, *upstream: str) -> str:
    payload = json.dumps({"settings": settings, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class _State:
    def __init__(self, path: Path):
        self.path = path
        self.stages: dict[str, dict[str, Any]] = json.loads(path.read_text())["stages"] if path.is_file() else {}

    def status(self, stage: str, key: str, force: bool) -> str:
        """"done", "resume" (same key, unfinished) or "fresh"; refuses a changed key without --force."""
        entry = self.stages.get(stage)
        if entry is None:
            return "fresh"
        if entry["key"] != key:
            if not force:
                raise UserError(f"stage {stage} in {self.path.parent} was run with other settings or inputs; pass --force "
                                f"to redo it and the stages after it, or choose a new --out")
            return "fresh"
        return "done" if entry.get("done") else "resume"

    def mark(self, stage: str, key: str, done: bool, **extra: Any) -> None:
        self.stages[stage] = {"key": key, "done": done, **extra}
        atomic_write_text(self.path, json.dumps({"stages": self.stages}, indent=2) + "\n")


def run(config: ExperimentRunConfig) -> Path:
    experiment = load_experiment(config.experiment)
    if config.corpus:
        experiment.corpus = list(config.corpus)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "experiment.json", json.dumps(experiment.to_dict(), indent=2) + "\n")
    state = _State(out / "state.json")
    started = time.perf_counter()
    for stage, key, action in _plan(experiment, out):
        status = state.status(stage, key, config.force)
        if status == "done":
            log(f"[experiment] {stage}: done earlier, skipped")
        else:
            log(f"[experiment] {stage}: {'resuming' if status == 'resume' else 'starting'}")
            state.mark(stage, key, done=False)
            began = time.perf_counter()
            action(status == "resume")
            state.mark(stage, key, done=True, seconds=round(time.perf_counter() - began, 1))
        if stage == config.stop_after:
            return out
    from stages.report import ReportConfig, run as report

    files = report(ReportConfig(run_dir=str(out)))
    log(f"[experiment] {experiment.name} finished in {time.perf_counter() - started:,.0f}s; report: {files.markdown}")
    return files.markdown


def _plan(experiment: ExperimentConfig, out: Path) -> list[tuple[str, str, Callable[[bool], Any]]]:
    """(stage name, key, action(resume)) in order; keys chain so an upstream change invalidates downstream."""
    from stages import dump_teacher, tokenize, train_teacher

    tokens, teacher, logits = out / "tokens", out / "teacher", out / "teacher-logits"
    tokens_key = _key({"corpus": experiment.corpus, **experiment.tokenize})
    teacher_key = _key(vars(experiment.teacher), tokens_key)
    logits_key = _key(vars(experiment.dump), teacher_key)
    plan = [
        ("tokens", tokens_key, lambda resume: tokenize.run(tokenize.TokenizeConfig(
            corpus=experiment.corpus, out=str(tokens), force=True, **experiment.tokenize))),
        ("teacher", teacher_key, lambda resume: train_teacher.run(train_teacher.TrainTeacherConfig(
            tokens=str(tokens), out=str(teacher), preset=experiment.teacher.preset,
            overrides=experiment.teacher.overrides(), resume=resume and _has_checkpoint(teacher), force=True))),
    ]
    if experiment.variants:
        dump = experiment.dump
        plan.append(("teacher-logits", logits_key, lambda resume: dump_teacher.run(dump_teacher.DumpTeacherConfig(
            checkpoint=str(teacher), tokens=str(tokens), out=str(logits), top_k=dump.top_k,
            temperatures=list(dump.temperatures), stride=dump.stride, batch_size=dump.batch_size, codec=dump.codec,
            resume=resume, force=not resume))))
    students = ([("baseline", None)] if experiment.baseline else []) + [(v.name, v) for v in experiment.variants]
    for name, variant in students:
        where = out / "students" / name
        key = _key({"student": vars(experiment.student), "variant": vars(variant) if variant else None},
                   logits_key if variant else tokens_key)
        plan.append((name, key, _student_action(experiment, variant, str(tokens), str(logits), where)))
    return plan


def _has_checkpoint(run_dir: Path) -> bool:
    return RunDir(run_dir).checkpoint_path.is_file()


def _student_action(experiment: ExperimentConfig, variant, tokens: str, logits: str, where: Path):
    from stages import train_student

    def action(resume: bool):
        settings = dict(tokens=tokens, out=str(where), preset=experiment.student.preset,
                        overrides=experiment.student.overrides(), resume=resume and _has_checkpoint(where), force=True)
        if variant is not None:
            settings.update(teacher_logits=logits, temperature=variant.temperature, w_teacher=variant.w_teacher,
                            w_data=variant.w_data, tail=variant.tail, transition_epoch=variant.transition_epoch)
        return train_student.run(train_student.TrainStudentConfig(**settings))
    return action
