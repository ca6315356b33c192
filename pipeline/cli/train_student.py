from __future__ import annotations

import click

from pipeline.cli.training_options import shortcut_overrides, training_options
from pipeline.distillation import DEFAULT_PRESET, PRESETS, SCHEDULES, TAIL_MODES, DistillationSpec, preset_settings
from pipeline.run_settings import load_overrides
from pipeline.spec_parsing import OPTIONS, build_spec, defaults

DISTILLATION = defaults(DistillationSpec)
PAPER = PRESETS["paper"]


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _described(settings: dict) -> str:
    return ", ".join(f"--{name.replace('_', '-')} {_shown(value)}" for name, value in settings.items())


def _default(name: str) -> str:
    """' (default: X; paper: Y)' for an option's help, both read from the spec and its presets ('paper' only
    where it differs)."""
    paper = PAPER.get(name, DISTILLATION[name])
    differs = f"; --distillation paper: {_shown(paper)}" if paper != DISTILLATION[name] else ""
    return f" (default: {_shown(DISTILLATION[name])}{differs})"


@click.command("train-student")
@training_options("paper-small-student")
@click.option("--teacher-logits", default=None, help="Logit store from dump-teacher. Omit (and --teacher-checkpoint) "
                                                     "to train the same-size baseline.")
@click.option("--teacher-checkpoint", default=None, help="Online mode: run this frozen teacher every step instead.")
@click.option("--online-top-k", type=int, default=0, help="Online mode: keep the teacher's top-k only (0 = full).")
@click.option("--distillation", "distillation_preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET,
              help=f"Starting point for the options below: recommended (their defaults, measured in docs/LOSS.md) or "
                   f"paper ({_described(PAPER)}). Options given explicitly override it.")
@click.option("--temperature", type=float, default=None, help=f"T of the teacher term{_default('temperature')}.")
@click.option("--w-teacher", type=float, default=None, help=f"w1, weight of T^2 * l_t{_default('w_teacher')}.")
@click.option("--w-data", type=float, default=None, help=f"w2, weight of l_d{_default('w_data')}.")
@click.option("--tail", type=click.Choice(TAIL_MODES), default=None,
              help=f"How the teacher's mass outside the top-k is matched (see docs/LOSS.md){_default('tail')}.")
@click.option("--transition-epoch", default=None,
              help="step schedule: superstill through this epoch, then plain cross-entropy; 'all' never "
                   f"switches (paper: 14 small, 1 or 3 large){_default('transition_epoch')}.")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=None,
              help="Teacher weight over training: step (the paper's, see --transition-epoch), linear "
                   "(w1 decays to 0 while w2 rises; see --decay-start, --decay-epochs) or auto (the decay starts "
                   f"when the student's held-out cross-entropy reaches the teacher's){_default('schedule')}.")
@click.option("--decay-start", type=float, default=None,
              help=f"linear schedule: epochs of full teacher weight first (fractions allowed)"
                   f"{_default('decay_start')}.")
@click.option("--decay-epochs", type=float, default=None,
              help=f"linear and auto schedules: epochs over which the teacher weight falls to 0"
                   f"{_default('decay_epochs')}.")
def command(tokens, out, preset, epochs, batch_size, lr, seed, device, config_file, model_file, settings, resume, force,
            teacher_logits, teacher_checkpoint, online_top_k, distillation_preset, **distillation):
    """Train a student from token ids plus the teacher's stored distribution (or the baseline without one).

    L = w1 * T^2 * l_t + w2 * l_d, the teacher's weight w1 following the schedule. The defaults are the
    measured recommendation (T = 1, auto schedule: imitate until the student's held-out cross-entropy reaches
    the teacher's, then decay); `--distillation paper` gives the paper's settings (T = 6, step schedule).
    Under torchrun it runs DDP.
    """
    from stages.train_student import TrainStudentConfig, run

    overrides = load_overrides(config_file, settings, shortcut_overrides(epochs, batch_size, lr, seed, device),
                               model_file)
    given = {name: value for name, value in distillation.items() if value is not None}
    settings = preset_settings({"distillation": distillation_preset, **given}, "distillation", "--")
    spec = build_spec(DistillationSpec, settings, OPTIONS, from_text=True)
    run(TrainStudentConfig(tokens=tokens, out=out, preset=preset, overrides=overrides, teacher_logits=teacher_logits,
                           teacher_checkpoint=teacher_checkpoint, online_top_k=online_top_k, distillation=spec,
                           resume=resume, force=force))
