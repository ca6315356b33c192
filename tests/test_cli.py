"""The `pipeline` group: every stage listed in workflow order, each with --help showing its defaults."""

import pytest
from click.testing import CliRunner

from pipeline.cli import COMMANDS, main

NAMES = [name.replace("_", "-") for name in COMMANDS]


def test_help_lists_every_stage_in_workflow_order():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    positions = [result.output.index(f"  {name} ") for name in NAMES]
    assert positions == sorted(positions)


@pytest.mark.parametrize("name", NAMES)
def test_each_stage_has_help(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0 and "Usage: " in result.output
    if name not in ("report", "inspect", "experiment", "store"):  # these have no option with a default
        assert "[default:" in result.output


def test_unknown_command_fails_cleanly():
    result = CliRunner().invoke(main, ["distill"])
    assert result.exit_code != 0 and "No such command" in result.output
