from __future__ import annotations

import click


@click.command("evaluate")
@click.option("--checkpoint", required=True, help="Checkpoint file or run directory.")
@click.option("--tokens", required=True, help="Token store to evaluate on.")
@click.option("--split", type=click.Choice(["val", "train"]), default="val", help="Which split.")
@click.option("--fraction", type=float, default=1.0, help="Leading fraction of the split (paper: 0.01 of train).")
@click.option("--max-tokens", type=int, default=0, help="Cap on tokens evaluated (0 = no cap).")
@click.option("--context", type=int, default=0, help="Window length (0 = the model's context).")
@click.option("--batch-size", type=int, default=32, help="Windows per batch.")
@click.option("--device", default="auto", help="auto | cpu | cuda | cuda:N.")
@click.option("--out", default=None, help="Write the result JSON here (default: evaluation-SPLIT.json beside the checkpoint).")
@click.option("--force", is_flag=True, help="Replace an existing result file written by this command.")
def command(**options):
    """Perplexity (and mean NLL, tokens evaluated) of a checkpoint on a token store split."""
    from stages.evaluate import EvaluateConfig, run

    result = run(EvaluateConfig(**options))
    click.echo(f"{result['split']} perplexity {result['perplexity']:.4f} (mean NLL {result['mean_nll']:.5f} nats "
               f"over {result['tokens_evaluated']:,} tokens); written to {result['written_to']}")
