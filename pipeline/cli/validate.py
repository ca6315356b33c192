from __future__ import annotations

import click

from pipeline.errors import UserError


@click.command("validate")
@click.argument("store")
@click.option("--tokens", required=True, help="The token store the logit store should belong to.")
@click.option("--checkpoint", default=None, help="Teacher checkpoint: also recompute sampled positions.")
@click.option("--sample", type=int, default=64, help="Positions per split to recompute with the teacher.")
@click.option("--seed", type=int, default=0, help="Seed for choosing the sampled positions.")
@click.option("--device", default="cpu", help="Device for the teacher.")
def command(**options):
    """Check a logit store: completion, token fingerprint, every chunk's CRC32C, and (with --checkpoint)
    the stored values against a fresh teacher forward on sampled positions."""
    from stages.validate import ValidateConfig, run

    result = run(ValidateConfig(**options))
    for problem in result["problems"]:
        click.echo(f"problem: {problem}", err=True)
    if not result["ok"]:
        raise UserError(f"{options['store']}: {len(result['problems'])} problem(s) found (listed above)")
    recomputed = (f", {result['positions_recomputed']} positions recomputed: {result['deviation']}, "
                  f"{result['precision']} store)") if options["checkpoint"] else ")"
    click.echo(f"{options['store']}: OK (checksums, completion, fingerprint{recomputed}")
