from __future__ import annotations

import click

from pipeline.cli.training_options import shortcut_overrides, training_options
from pipeline.distillation import SCHEDULES, TAIL_MODES, DistillationSpec
from pipeline.run_settings import load_overrides
from pipeline.spec_parsing import OPTIONS, build_spec, defaults

DISTILLATION = defaults(DistillationSpec)


@click.command("train-student")
@training_options("paper-small-student")
@click.option("--teacher-logits", default=None, help="Logit store from dump-teacher. Omit (and --teacher-checkpoint) "
                                                     "to train the same-size baseline.")
@click.option("--teacher-checkpoint", default=None, help="Online mode: run this frozen teacher every step instead.")
@click.option("--online-top-k", type=int, default=0, help="Online mode: keep the teacher's top-k only (0 = full).")
@click.option("--temperature", type=float, default=DISTILLATION["temperature"], help="T of the teacher term (paper: 6).")
@click.option("--w-teacher", type=float, default=DISTILLATION["w_teacher"], help="w1, weight of T^2 * l_t (paper: 0.6).")
@click.option("--w-data", type=float, default=DISTILLATION["w_data"], help="w2, weight of l_d (paper: 0.4).")
@click.option("--tail", type=click.Choice(TAIL_MODES), default=DISTILLATION["tail"],
              help="How the teacher's mass outside the top-k is matched (see docs/LOSS.md).")
@click.option("--transition-epoch", default=DISTILLATION["transition_epoch"],
              help="step schedule: superstill through this epoch, then plain cross-entropy; 'all' never "
                   "switches (paper: 14 small, 1 or 3 large).")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=DISTILLATION["schedule"],
              help="Teacher weight over training: step (the paper's, see --transition-epoch), linear "
                   "(w1 decays to 0 while w2 rises; see --decay-start, --decay-epochs) or auto (the decay starts "
                   "when the student's held-out cross-entropy reaches the teacher's).")
@click.option("--decay-start", type=float, default=DISTILLATION["decay_start"],
              help="linear schedule: epochs of full teacher weight first (fractions allowed).")
@click.option("--decay-epochs", type=float, default=DISTILLATION["decay_epochs"],
              help="linear and auto schedules: epochs over which the teacher weight falls to 0.")
def command(tokens, out, preset, epochs, batch_size, lr, seed, device, config_file, settings, resume, force,
            teacher_logits, teacher_checkpoint, online_top_k, **distillation):
    """Train a student from token ids plus the teacher's stored distribution (or the baseline without one).

    L = w1 * T^2 * l_t + w2 * l_d until the transition epoch, then l_d. Under torchrun it runs DDP.
    """
    from stages.train_student import TrainStudentConfig, run

    overrides = load_overrides(config_file, settings, shortcut_overrides(epochs, batch_size, lr, seed, device))
    spec = build_spec(DistillationSpec, distillation, OPTIONS, from_text=True)
    run(TrainStudentConfig(tokens=tokens, out=out, preset=preset, overrides=overrides, teacher_logits=teacher_logits,
                           teacher_checkpoint=teacher_checkpoint, online_top_k=online_top_k, distillation=spec,
                           resume=resume, force=force))
