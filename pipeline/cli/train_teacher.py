from __future__ import annotations

import click

from pipeline.cli.training_options import shortcut_overrides, training_options
from pipeline.run_settings import load_overrides


@click.command("train-teacher")
@training_options("paper-small-teacher")
@click.option("--baseline", is_flag=True, help="Record the run as a same-size baseline rather than a teacher.")
def command(tokens, out, preset, epochs, batch_size, lr, seed, device, config_file, model_file, settings, resume, force, baseline):
    """Train a teacher (or any model) with plain next-token cross-entropy.

    Under `torchrun --nproc_per_node N pipeline train-teacher ...` it runs DistributedDataParallel.
    """
    from stages.train_teacher import TrainTeacherConfig, run

    overrides = load_overrides(config_file, settings, shortcut_overrides(epochs, batch_size, lr, seed, device),
                               model_file)
    run(TrainTeacherConfig(tokens=tokens, out=out, preset=preset, overrides=overrides, resume=resume, force=force,
                           kind="baseline" if baseline else "teacher"))
