from __future__ import annotations

import click


@click.command("experiment")
@click.argument("config")
@click.option("--out", required=True, help="Run directory; re-run the same command to continue an interrupted run.")
@click.option("--corpus", multiple=True, help="Use these text files/directories instead of the experiment's corpus.")
@click.option("--force", is_flag=True, help="Redo stages whose settings changed (and every stage after them).")
@click.option("--stop-after", default=None, help="Stop after this stage (tokens, teacher, teacher-logits, or a student).")
def command(config, out, corpus, force, stop_after):
    """Run an experiment end to end: tokenize, train the teacher, dump its distribution, train the baseline and
    every superstilled student, and write the report.

    CONFIG is an experiment TOML file or a shipped one: demo (2 CPU cores, ~10 min), paper-small, paper-large (GPU).
    """
    from stages.experiment import ExperimentRunConfig, run

    result = run(ExperimentRunConfig(experiment=config, out=out, corpus=list(corpus) or None, force=force,
                                     stop_after=stop_after))
    click.echo(str(result))
