from __future__ import annotations

import click

from pipeline.config import DEVICE_HELP, PRECISIONS
from pipeline.dump_spec import ROW_KINDS, SPLIT_CHOICES, DumpSpec
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
@click.option("--rows", type=click.Choice(ROW_KINDS), default=DUMP["rows"],
              help="topk: the k most likely ids with exact scores; sampled: --samples ids drawn from the teacher, "
                   "kept as counts (unbiased, about a third of top-64's bytes; docs/STORE.md section 10).")
@click.option("--samples", type=int, default=DUMP["samples"], help="Sampled rows: draws per position (N).")
@click.option("--sample-temperature", type=float, default=DUMP["sample_temperature"],
              help="Sampled rows: temperature drawn at; students must train at this --temperature.")
@click.option("--sample-seed", type=int, default=DUMP["sample_seed"], help="Sampled rows: seed of the per-position draws.")
@click.option("--device", default="auto", help=DEVICE_HELP + ".")
@click.option("--resume", is_flag=True, help="Finish an interrupted dump (skips shards already written).")
@click.option("--force", is_flag=True, help="Overwrite an existing logit store (never anything else).")
@click.option("--allow-other-tokens", is_flag=True,
              help="Dump although the checkpoint was trained on other tokens (only if the vocabularies are the same).")
@click.option("--part", default=None, metavar="I/N",
              help="Write only part I of N (shards s with s % N == I-1), e.g. one task of a job array; the part that "
                   "finds every shard written marks the store complete.")
def command(checkpoint, tokens, out, device, resume, force, allow_other_tokens, part, **spec):
    """Run the frozen teacher once over a token store and write its top-k distribution per position.

    Under `torchrun --nproc_per_node N pipeline dump-teacher ...` each rank computes and writes its own shards;
    with `--part I/N` on several machines (or job-array tasks) each writes its part's shards into one store
    (under torchrun too: the part's shards are then dealt to its ranks).
    """
    from pipeline.dump_parts import Part
    from stages.dump_teacher import DumpTeacherConfig, run

    spec["temperatures"] = list(spec["temperatures"])
    result = run(DumpTeacherConfig(checkpoint=checkpoint, tokens=tokens, out=out, device=device, resume=resume,
                                   force=force, allow_other_tokens=allow_other_tokens, part=Part.parse(part),
                                   spec=build_spec(DumpSpec, spec, OPTIONS,
                                                   options={"temperatures": "--temperature"})))
    missing = result.get("missing_shards")
    if missing is not None and "stats" not in result:
        click.echo(f"part {part} of {out}: {result['positions_computed']:,} positions written; " +
                   (f"{sum(map(len, missing.values()))} shards of other parts still missing" if missing
                    else "the store is complete"))
    if "stats" in result:
        click.echo(f"wrote {result['location']}: {result['positions_computed']:,} positions, "
                   f"{result['stats']['bytes_per_position']:.1f} bytes/position")
