from __future__ import annotations

import click

from pipeline.spec_parsing import coerce


@click.command("experiment")
@click.argument("config")
@click.option("--out", required=True, help="Run directory; re-run the same command to continue an interrupted run.")
@click.option("--corpus", multiple=True, help="Use these text files/directories instead of the experiment's corpus.")
@click.option("--force", is_flag=True, help="Redo stages whose settings changed (and every stage after them).")
@click.option("--stop-after", default=None,
              help="Stop after this stage (tokens, teacher, teacher-logits, or NAME/seed-S of a student).")
@click.option("--seeds", default=None, metavar="S,S,...",
              help="Student seeds, e.g. 0,1,2: the baseline and every variant train once per seed, paired by seed.")
def command(config, out, corpus, force, stop_after, seeds):
    """Run an experiment end to end: tokenize, train the teacher, dump its distribution, train the baseline and
    every superstilled student, and write the report.

    CONFIG is an experiment TOML file or a shipped one: demo (2 CPU cores, ~11 min), demo-kjv, demo-seeds,
    tail-and-temperature, demo-sampled, cross-architecture, paper-small, paper-large (GPU).
    """
    from stages.experiment import ExperimentRunConfig, run

    seed_list = coerce(seeds, list[int], "--seeds", from_text=True) if seeds is not None else None
    result = run(ExperimentRunConfig(experiment=config, out=out, corpus=list(corpus) or None, force=force,
                                     stop_after=stop_after, seeds=seed_list))
    click.echo(str(result))
