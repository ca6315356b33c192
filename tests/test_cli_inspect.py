"""`pipeline inspect` on a run directory or checkpoint: family, architecture, parameter count, position."""

import json

import torch
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import model_config_from_dict
from pipeline.model_families import build_model
from tests.factories import tiny_teacher


def test_inspect_a_run_shows_its_family_and_parameter_count(tmp_path):
    _, teacher = tiny_teacher(tmp_path, steps=3)
    spec = json.loads((tmp_path / "teacher" / "run.json").read_text())["model"]
    expected = build_model(model_config_from_dict(spec)).num_parameters()  # counted afresh from the spec
    for path in (teacher, f"{teacher}/checkpoint.pt"):
        result = CliRunner().invoke(main, ["inspect", path])
        assert result.exit_code == 0, result.output
        assert "architecture  gpt (family gpt)" in result.output
        assert f"parameters    {expected:,}" in result.output
        assert "epoch 2, step 0" in result.output


def test_inspect_counts_a_tied_head_once_from_the_checkpoint_alone(tmp_path):
    _, teacher = tiny_teacher(tmp_path, steps=3)
    (tmp_path / "teacher" / "run.json").unlink()  # only the checkpoint says how big the model is
    payload = torch.load(f"{teacher}/checkpoint.pt", weights_only=True)
    tied = sum(t.numel() for name, t in payload["model"].items() if name != "head.weight")
    result = CliRunner().invoke(main, ["inspect", teacher])
    assert result.exit_code == 0 and f"parameters    {tied:,}" in result.output, result.output


def test_inspect_a_run_without_a_checkpoint_is_a_one_line_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"kind": "student", "model": {"family": "hf", "model_type": "rwkv"}}))
    result = CliRunner().invoke(main, ["inspect", str(run)])
    assert result.exit_code != 0 and "architecture  hf:rwkv" in result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error")] == [
        f"Error: PATH {run}: no checkpoint.pt (training has not saved yet, or it was moved); resume the run or pass "
        f"its directory once it has saved a checkpoint"]
