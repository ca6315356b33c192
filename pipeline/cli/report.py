"""`pipeline report RUN`: write RUN/report.md and RUN/figures/*.png, print the report's path."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("run_dir", metavar="RUN")
@click.option("--baseline", default=None, metavar="NAME",
              help="Run under RUN/students/ to compare against (default: the one whose kind is baseline).")
def command(run_dir: str, baseline: str | None) -> None:
    """Perplexity figures, final-perplexity and sample-complexity tables, and cost accounting for RUN.

    Safe to run while the experiment is still training: it reports what is there so far, and rebuilds
    report.md and figures/ in place each time.
    """
    from stages.report import ReportConfig, run

    outputs = run(ReportConfig(run_dir=run_dir, baseline=baseline))
    click.echo(str(outputs.markdown))
