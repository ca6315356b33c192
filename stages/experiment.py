"""`pipeline experiment`: the paper's protocol end to end, each stage in its own subdirectory of RUN.

    RUN/experiment.json      the resolved experiment
    RUN/state.json           per stage: a key (sha256 of its settings and its inputs' keys) and done/not
    RUN/tokens/              token store            RUN/teacher/         teacher run
    RUN/teacher-logits/      logit store            RUN/students/NAME/seed-S/   baseline and students, per seed
    RUN/report.md, RUN/figures/

A stage whose key matches a finished one is skipped; an unfinished one with the same key is resumed; one
whose key changed (the file was edited) is refused unless --force, which redoes it and everything that
depends on it. So an interrupted experiment continues when the same command is run again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.config import resolve
from pipeline.errors import UserError
from pipeline.experiment_config import ExperimentConfig, ModelStage, check_seeds, load_experiment
from pipeline.model_families import check_buildable
from pipeline.progress import log
from pipeline.run_dir import RunDir
from pipeline.spec_parsing import build_spec
from pipeline.storage import atomic_write_text, check_apart, check_creatable
from stages import train_student


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
    """Stop after this stage (tokens, teacher, teacher-logits, NAME/seed-S); for staged runs and tests."""
    seeds: list[int] | None = None
    """Replace the experiment's student seeds."""


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


@dataclass
class _Stage:
    """One step of the protocol: its name, key, output, and how to run it."""

    name: str
    key: str
    output: Path
    action: Callable[[bool, bool], Any]
    """action(resume, force): run (or continue) the stage."""


def run(config: ExperimentRunConfig) -> Path:
    """Validate everything (settings of every stage, --stop-after, outputs) before writing anything, then run."""
    experiment = load_experiment(config.experiment)
    if config.corpus:
        experiment.corpus = list(config.corpus)
    if config.seeds:
        experiment.seeds = check_seeds(list(config.seeds), "--seeds")
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; an experiment is a directory: choose another --out")
    check_apart(out, [("--corpus", path) for path in experiment.corpus])
    check_creatable(out)  # a writable place, before any work
    stages = _plan(experiment, out, config.experiment)
    names = [stage.name for stage in stages]
    if config.stop_after is not None and config.stop_after not in names:
        raise UserError(f"--stop-after {config.stop_after!r} is not a stage of this experiment; choose one of "
                        f"{', '.join(names)}")
    state = _State(out / "state.json")
    decisions = [(stage, _decide(stage, state, config.force)) for stage in stages]  # every refusal comes here
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "experiment.json", json.dumps(experiment.to_dict(), indent=2) + "\n")
    started = time.perf_counter()
    for stage, (status, force) in decisions:
        if status == "done":
            log(f"[experiment] {stage.name}: done earlier, skipped")
        else:
            log(f"[experiment] {stage.name}: {'resuming' if status == 'resume' else 'starting'}")
            state.mark(stage.name, stage.key, done=False)
            began = time.perf_counter()
            stage.action(status == "resume", force)
            state.mark(stage.name, stage.key, done=True, seconds=round(time.perf_counter() - began, 1))
        if stage.name == config.stop_after:
            return out
    from stages.report import ReportConfig, run as report

    files = report(ReportConfig(run_dir=str(out)))
    log(f"[experiment] {experiment.name} finished in {time.perf_counter() - started:,.0f}s; report: {files.markdown}")
    return files.markdown


def _decide(stage: _Stage, state: _State, force: bool) -> tuple[str, bool]:
    """(status, force for the stage). The stage may replace its output only if this experiment made it
    (state.json has an entry for it) or --force was given (and then only a superstill output, which the
    stage checks): outputs from the stage-by-stage commands in the same directory are never lost silently."""
    status = state.status(stage.name, stage.key, force)
    ours = stage.name in state.stages
    present = stage.output.exists() and (not stage.output.is_dir() or any(stage.output.iterdir()))
    if status == "fresh" and present and not ours and not force:
        raise UserError(f"{stage.output} already exists but this experiment did not make it (state.json has no "
                        f"{stage.name} stage); move it away, choose another --out, or pass --force to replace it")
    return status, ours or force


def _plan(experiment: ExperimentConfig, out: Path, source: str) -> list[_Stage]:
    """The stages in order, each stage's settings built and validated now; keys chain so an upstream change
    invalidates everything downstream."""
    from stages import dump_teacher, tokenize, train_teacher

    tokens, teacher, logits = out / "tokens", out / "teacher", out / "teacher-logits"
    tokens_key = _key({"corpus": experiment.corpus, **experiment.tokenize})
    teacher_key = _key(vars(experiment.teacher), tokens_key)
    logits_key = _key(experiment.dump.to_dict(), teacher_key)
    tokenize_config = build_spec(tokenize.TokenizeConfig, {"corpus": experiment.corpus, "out": str(tokens),
                                                           **experiment.tokenize}, f"{source} [tokenize]")
    for label, stage in [("[teacher]", experiment.teacher), ("[student]", experiment.student),
                         *((f"[architectures.{name}]", stage) for name, stage in experiment.architectures.items())]:
        model, _ = resolve(stage.preset, stage.overrides(), f"{source} {label}")
        check_buildable(model, tokenize_config.vocab_size)
    teacher_config = train_teacher.TrainTeacherConfig(tokens=str(tokens), out=str(teacher),
                                                      preset=experiment.teacher.preset,
                                                      overrides=experiment.teacher.overrides())
    plan = [_Stage("tokens", tokens_key, tokens,
                   lambda resume, force: tokenize.run(dataclasses.replace(tokenize_config, force=True if resume else force))),
            _Stage("teacher", teacher_key, teacher, _training_action(train_teacher.run, teacher_config))]
    if experiment.variants:
        dump_config = dump_teacher.DumpTeacherConfig(checkpoint=str(teacher), tokens=str(tokens), out=str(logits),
                                                     spec=experiment.dump)
        plan.append(_Stage("teacher-logits", logits_key, logits, lambda resume, force: dump_teacher.run(
            dataclasses.replace(dump_config, resume=resume, force=force and not resume))))
    for seed in experiment.seeds:  # seed by seed: the first seed's comparison is complete first
        for name, variant, architecture in experiment.students():
            where = out / "students" / name / f"seed-{seed}"
            model = experiment.student_model(architecture)
            key = _key({"student": vars(model), "seed": seed,
                        "variant": variant.settings() if variant else None}, logits_key if variant else tokens_key)
            plan.append(_Stage(f"{name}/seed-{seed}", key, where, _training_action(train_student.run, _student_config(
                model, variant, seed, str(tokens), str(logits), where))))
    return plan


def _training_action(train: Callable[[Any], Any], config):
    """Resume a run when it has a checkpoint; otherwise start it (replacing what was there when allowed)."""
    def action(resume: bool, force: bool):
        resumable = resume and RunDir(config.out).checkpoint_path.is_file()
        return train(dataclasses.replace(config, resume=resumable, force=force and not resumable))
    return action


def _student_config(model: ModelStage, variant, seed: int, tokens: str, logits: str, where: Path):
    overrides = model.overrides()
    overrides["train"]["seed"] = seed
    settings = dict(tokens=tokens, out=str(where), preset=model.preset, overrides=overrides)
    if variant is not None:
        settings.update(teacher_logits=logits, distillation=variant.distillation)
    return train_student.TrainStudentConfig(**settings)
