from __future__ import annotations

import click

from pipeline.cli.training_options import shortcut_overrides, training_options
from pipeline.run_settings import load_overrides


@click.command("train-student")
@training_options("paper-small-student")
@click.option("--teacher-logits", default=None, help="Logit store from dump-teacher. Omit (and --teacher-checkpoint) "
                                                     "to train the same-size baseline.")
@click.option("--teacher-checkpoint", default=None, help="Online mode: run this frozen teacher every step instead.")
@click.option("--online-top-k", type=int, default=0, help="Online mode: keep the teacher's top-k only (0 = full).")
@click.option("--temperature", type=float, default=6.0, help="T of the teacher term (paper: 6).")
@click.option("--w-teacher", type=float, default=0.6, help="w1, weight of T^2 * l_t (paper: 0.6).")
@click.option("--w-data", type=float, default=0.4, help="w2, weight of l_d (paper: 0.4).")
@click.option("--tail", type=click.Choice(["bucket", "renorm"]), default="bucket",
              help="How the teacher's mass outside the top-k is matched (see docs/LOSS.md).")
@click.option("--transition-epoch", default="all", help="Superstill through this epoch, then plain cross-entropy; "
                                                        "'all' never switches (paper: 14 small, 1 or 3 large).")
def command(tokens, out, preset, epochs, batch_size, lr, seed, device, config_file, settings, resume, force,
            teacher_logits, teacher_checkpoint, online_top_k, temperature, w_teacher, w_data, tail, transition_epoch):
    """Train a student from token ids plus the teacher's stored distribution (or the baseline without one).

    L = w1 * T^2 * l_t + w2 * l_d until the transition epoch, then l_d. Under torchrun it runs DDP.
    """
    from stages.train_student import TrainStudentConfig, run

    overrides = load_overrides(config_file, settings, shortcut_overrides(epochs, batch_size, lr, seed, device))
    run(TrainStudentConfig(tokens=tokens, out=out, preset=preset, overrides=overrides, teacher_logits=teacher_logits,
                           teacher_checkpoint=teacher_checkpoint, online_top_k=online_top_k, temperature=temperature,
                           w_teacher=w_teacher, w_data=w_data, tail=tail, transition_epoch=transition_epoch,
                           resume=resume, force=force))
