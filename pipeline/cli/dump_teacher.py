from __future__ import annotations

import click

from pipeline.config import PRECISIONS


@click.command("dump-teacher")
@click.option("--checkpoint", required=True, help="Teacher checkpoint file or run directory.")
@click.option("--tokens", required=True, help="Token store (local path or fsspec URL).")
@click.option("--out", required=True, help="Logit store to write (local path or fsspec URL, e.g. s3://bucket/store).")
@click.option("--top-k", type=int, default=64, help="Ids stored per position.")
@click.option("--temperature", "temperatures", type=float, multiple=True, default=(1.0, 6.0),
              help="Temperature stored exactly; repeat for several (each costs 8 bytes/position before compression).")
@click.option("--stride", type=int, default=0, help="Step between teacher windows (0 = the teacher's context).")
@click.option("--split", type=click.Choice(["train", "val", "all"]), default="all", help="Which split(s) to dump.")
@click.option("--batch-size", type=int, default=32, help="Teacher windows per forward pass.")
@click.option("--codec", default=None, help="Compressor preset (default: the measured best; the list is in docs/STORE.md).")
@click.option("--shard-rows", type=int, default=65536, help="Positions per shard file (unit of work and transfer).")
@click.option("--chunk-rows", type=int, default=4096, help="Positions per compressed chunk (unit of a training read).")
@click.option("--device", default="auto", help="auto | cpu | cuda | cuda:N.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto",
              help="Teacher trunk precision: auto = bf16 autocast on CUDA, fp32 elsewhere (the head is always fp32).")
@click.option("--resume", is_flag=True, help="Finish an interrupted dump (skips shards already written).")
@click.option("--force", is_flag=True, help="Overwrite an existing logit store (never anything else).")
@click.option("--allow-other-tokens", is_flag=True,
              help="Dump although the checkpoint was trained on other tokens (only if the vocabularies are the same).")
def command(**options):
    """Run the frozen teacher once over a token store and write its top-k distribution per position.

    Under `torchrun --nproc_per_node N pipeline dump-teacher ...` each rank computes and writes its own shards.
    """
    from stages.dump_teacher import DumpTeacherConfig, run

    options["temperatures"] = list(options["temperatures"])
    result = run(DumpTeacherConfig(**options))
    if "stats" in result:
        click.echo(f"wrote {result['location']}: {result['positions_computed']:,} positions, "
                   f"{result['stats']['bytes_per_position']:.1f} bytes/position")
