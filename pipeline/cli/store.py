"""`pipeline store slice|status`: work on an existing logit store without the teacher."""

from __future__ import annotations

import click

from pipeline.dump_spec import SPLIT_CHOICES

SHOWN = 24  # missing shards listed per split


@click.group("store")
def command() -> None:
    """Work on a logit store without its teacher: cut a smaller one, or see what a dump still misses."""


@command.command("slice")
@click.argument("store")
@click.option("--out", required=True, help="The smaller store to write (local path or URL, apart from STORE).")
@click.option("--top-k", type=int, default=None, help="Ids kept per position, at most the stored k  [default: as stored]")
@click.option("--temperature", "temperatures", type=float, multiple=True,
              help="A stored temperature to keep; repeat for several  [default: every stored one]")
@click.option("--split", type=click.Choice(SPLIT_CHOICES), default="all", show_default=True,
              help="Which stored split(s) to keep.")
@click.option("--force", is_flag=True, help="Replace an existing logit store at --out (never anything else).")
def slice_command(store, out, top_k, temperatures, split, force) -> None:
    """Cut a smaller logit store out of STORE, exactly: fewer ids per position (each dropped id's probability
    moves into the tail at every temperature), fewer temperatures, or fewer splits. Its card says what it was
    cut from."""
    from stages.store import SliceConfig, run_slice

    result = run_slice(SliceConfig(store=store, out=out, top_k=top_k, temperatures=list(temperatures), split=split,
                                   force=force))
    click.echo(f"wrote {result['location']}: {sum(result['positions'].values()):,} positions, "
               f"{result['stats']['bytes_per_position']:.1f} bytes/position")


@command.command("status")
@click.argument("store")
def status_command(store) -> None:
    """What a logit store's dump has written and what it still misses (for dumps split with --part I/N,
    which part owns each missing shard)."""
    from stages.store import StatusConfig, run_status

    status = run_status(StatusConfig(store=store))
    splits = status["splits"]
    missing = sum(len(s["missing"]) for s in splits.values())
    total = sum(s["shards"] for s in splits.values())
    state = "complete" if status["complete"] else "incomplete"
    click.echo(f"{store}: {state}, {total - missing} of {total} shards written"
               + (f" (dump in {status['parts']} parts)" if status["parts"] > 1 else ""))
    for split, info in splits.items():
        line = f"  {split:<6} {info['written']}/{info['shards']} shards written"
        if info["missing"]:
            shown = [f"{s} (part {p}/{status['parts']})" if status["parts"] > 1 else str(s)
                     for s, p in zip(info["missing"][:SHOWN], info["owners"])]
            more = len(info["missing"]) - SHOWN
            line += "; missing " + ", ".join(shown) + (f", and {more} more" if more > 0 else "")
        click.echo(line)
    for path in status["lost_files"]:
        click.echo(f"  LOST   {path} (its shard is marked written; re-download the store or dump it again)")
    if not status["complete"] and not missing:
        click.echo("  every shard is written but the store is not marked complete: re-run any part (or "
                   "`pipeline dump-teacher ... --resume`) to finish it")
