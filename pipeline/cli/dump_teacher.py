from __future__ import annotations

import click

from pipeline.config import DEVICE_HELP, PRECISIONS
from pipeline.dump_spec import SPLIT_CHOICES, DumpSpec
from pipeline.spec_parsing import OPTIONS, build_spec, defaults

DUMP = defaults(DumpSpec)


@click.command("dump-teacher")
@click.option("--checkpoint", required=True, help="Teacher checkpoint file or run directory.")
@click.option("--tokens", required=True, help="Token store (local path or fsspec URL).")
@click.option("--out", required=True, help="Logit store to write (local path or fsspec URL, e.g. s3://bucket/store).")
@click.option("--top-k", type=int, default=DUMP["top_k"], help="Ids stored per position.")
@click.option("--temperature", "temperatures", type=float, multiple=True, default=DUMP["temperatures"],
              help="Temperature stored exactly; repeat for several (each costs 8 bytes/position before compression).")
@click.option("--stride", type=int, default=DUMP["stride"], help="Step between teacher windows (0 = the teacher's context).")
@click.option("--split", type=click.Choice(SPLIT_CHOICES), default=DUMP["split"], help="Which split(s) to dump.")
@click.option("--batch-size", type=int, default=DUMP["batch_size"], help="Teacher windows per forward pass.")
@click.option("--codec", default=DUMP["codec"],
              help="Compressor preset (default: the measured best; the list is in docs/STORE.md).")
@click.option("--shard-rows", type=int, default=DUMP["shard_rows"], help="Positions per shard file (unit of work and transfer).")
@click.option("--chunk-rows", type=int, default=DUMP["chunk_rows"], help="Positions per compressed chunk (unit of a training read).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=DUMP["precision"],
              help="Teacher trunk precision: auto = bf16 autocast on CUDA, fp32 elsewhere (the head is always fp32).")
@click.option("--device", default="auto", help=DEVICE_HELP + ".")
@click.option("--resume", is_flag=True, help="Finish an interrupted dump (skips shards already written).")
@click.option("--force", is_flag=True, help="Overwrite an existing logit store (never anything else).")
@click.option("--allow-other-tokens", is_flag=True,
              help="Dump although the checkpoint was trained on other tokens (only if the vocabularies are the same).")
def command(checkpoint, tokens, out, device, resume, force, allow_other_tokens, **spec):
    """Run the frozen teacher once over a token store and write its top-k distribution per position.

    Under `torchrun --nproc_per_node N pipeline dump-teacher ...` each rank computes and writes its own shards.
    """
    from stages.dump_teacher import DumpTeacherConfig, run

    spec["temperatures"] = list(spec["temperatures"])
    result = run(DumpTeacherConfig(checkpoint=checkpoint, tokens=tokens, out=out, device=device, resume=resume,
                                   force=force, allow_other_tokens=allow_other_tokens,
                                   spec=build_spec(DumpSpec, spec, OPTIONS)))
    if "stats" in result:
        click.echo(f"wrote {result['location']}: {result['positions_computed']:,} positions, "
                   f"{result['stats']['bytes_per_position']:.1f} bytes/position")
