"""The `pipeline` command: one click group, one module per subcommand in this package.

Each subcommand parses options into its stage's typed config and calls `stages.<name>.run(config)`.
`UserError`s become a one-line `Error: ...` and a non-zero exit instead of a traceback.
"""

from __future__ import annotations

import importlib

import click

from pipeline import __version__
from pipeline.errors import UserError

# Subcommand modules, in the order `pipeline --help` lists them (the order of the workflow).
COMMANDS = ["tokenize", "train_teacher", "dump_teacher", "train_student", "evaluate", "experiment",
            "report", "inspect", "validate", "store"]


class PipelineGroup(click.Group):
    """A group that lists commands in workflow order and reports user errors in one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(error.exit_code)
        except OSError as error:  # the environment, not a bug: no permission, disk full, gone away
            where = f"{error.filename}: " if error.filename else ""
            click.echo(f"Error: {where}{error.strerror or error}; check the path, its permissions and free space, "
                       f"then re-run (with --resume where the command has it)", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("Error: interrupted; outputs are written atomically or marked complete only at the end, "
                       "so nothing half-written looks finished: re-run the command", err=True)
            ctx.exit(130)


@click.group(cls=PipelineGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="superstill")
def main() -> None:
    """superstill: pretrain a larger language model faster from a smaller teacher's stored distribution.

    Workflow: tokenize -> train-teacher -> dump-teacher -> train-student (and the baseline) -> evaluate
    -> report. `experiment` runs all of them from one file.
    """


for _name in COMMANDS:
    main.add_command(importlib.import_module(f"pipeline.cli.{_name}").command)
