"""The GPU code paths, run on CPU through the real CLI: bf16 autocast and torch.compile, for the
teacher/baseline objective (plain cross-entropy) and the store-fed superstill objective.

CUDA runs take these paths by default (precision "auto" is bf16 there), so without this file they would
first run on a GPU. Each run is a few steps of a tiny model; it must finish with finite losses and leave
a checkpoint that loads, and its numbers must match the same run in fp32 / eager mode:

- bf16: autocast keeps 8 significant bits, a unit roundoff of 2^-8 (0.39%), and rounds the matmuls'
  inputs to it. A loss off by a whole bf16 rounding of itself would mean more than rounding went wrong
  (say, a term computed from bf16 logits without float32 accumulation), so the bound is a relative 2^-8
  on each loss and perplexity; these tiny runs differ by ~1e-5, so it is loose but not vacuous. The runs
  must also differ at all, which proves autocast was on.
- compile: the CPU's default (inductor) backend generates C++ and needs a system compiler, which .ci/run
  does not install, and it took over 2 minutes for one 4-step run on 2 busy cores; so `torch.compile`
  runs with backend="aot_eager" here: Dynamo captures the model's graph and AOTAutograd traces its
  backward, with eager kernels. That is the part of compilation this project's code can break (graph
  capture, the wrapped module, checkpoints of the unwrapped one); inductor's kernels are torch's. The
  eager kernels run in eager mode's order, so the numbers match to float rounding (here: exactly).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from pipeline.checkpoint import load_model
from pipeline.cli import main
from tests.factories import TINY_MODEL, TINY_TRAIN, micro_token_store

STEPS = 4
TEMPERATURE = 2.0
BF16_RTOL = 2.0 ** -8
COMPILE_RTOL = 1e-6


def cli(*args: str) -> None:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)


def settings(**train) -> list[str]:
    """--set options for a tiny model and a few steps, plus any train.* settings."""
    values = {**{f"model.{k}": v for k, v in TINY_MODEL.items()},
              **{f"train.{k}": v for k, v in {**TINY_TRAIN, "max_steps_per_epoch": STEPS, **train}.items()}}
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def train(kind: str, setup: dict, out: str, **train_settings) -> dict:
    """One epoch of `kind` ("teacher": cross-entropy, "student": store-fed superstill) through the CLI;
    returns its metrics line."""
    common = ["--tokens", setup["tokens"], "--out", out, "--epochs", "1", "--device", "cpu",
              *settings(**train_settings)]
    if kind == "teacher":
        cli("train-teacher", "--preset", "tiny-teacher", *common)
    else:
        cli("train-student", "--preset", "tiny-student", "--teacher-logits", setup["store"],
            "--temperature", str(TEMPERATURE), *common)
    (line,) = [e for e in map(json.loads, open(f"{out}/metrics.jsonl").read().splitlines()) if e["event"] == "epoch"]
    return line


LOSSES = {"teacher": ("loss", "train_nll", "val_nll"),
          "student": ("loss", "loss_teacher", "loss_data", "train_nll", "val_nll")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A token store, an fp32 teacher trained on it, its top-8 store at T = 2, and the fp32 eager runs
    of both objectives that the bf16 and compiled runs are compared with."""
    root = tmp_path_factory.mktemp("gpu_paths")
    setup = {"tokens": micro_token_store(str(root / "tokens")), "root": root}
    setup["fp32"] = {"teacher": train("teacher", setup, str(root / "teacher"))}
    setup["store"] = str(root / "store")
    cli("dump-teacher", "--checkpoint", str(root / "teacher"), "--tokens", setup["tokens"], "--out", setup["store"],
        "--top-k", "8", "--temperature", str(TEMPERATURE), "--split", "train", "--device", "cpu",
        "--shard-rows", "2048", "--chunk-rows", "512")
    setup["fp32"]["student"] = train("student", setup, str(root / "student"))
    return setup


def assert_finished(metrics: dict, kind: str, out) -> None:
    """Finite losses, and a checkpoint whose weights load and give finite logits."""
    for name in LOSSES[kind]:
        assert math.isfinite(metrics[name]), (name, metrics)
    model, _ = load_model(out)
    with torch.no_grad():
        assert torch.isfinite(model(torch.zeros(1, TINY_MODEL["context"], dtype=torch.long))).all()


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_bf16_autocast_matches_fp32(setup, kind, tmp_path):
    metrics = train(kind, setup, str(tmp_path / "bf16"), precision="bf16")
    assert_finished(metrics, kind, tmp_path / "bf16")
    reference = setup["fp32"][kind]
    for name in LOSSES[kind]:
        assert metrics[name] == pytest.approx(reference[name], rel=BF16_RTOL), name
    assert metrics["loss"] != reference["loss"]                    # autocast really ran in bf16


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_compiled_model_matches_eager(setup, kind, tmp_path, compiled):
    metrics = train(kind, setup, str(tmp_path / "compiled"), compile="true")
    assert len(compiled) == 1                                      # the training loop took the compile path
    assert_finished(metrics, kind, tmp_path / "compiled")
    for name in LOSSES[kind]:
        assert metrics[name] == pytest.approx(setup["fp32"][kind][name], rel=COMPILE_RTOL), name
