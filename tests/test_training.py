"""The one training loop: metrics, exact resume, interruption, DDP, and the train-teacher/evaluate CLI."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from pipeline.checkpoint import load
from pipeline.cli import main
from pipeline.errors import InterruptedRun
from pipeline.objectives import DataObjective
from pipeline.run_settings import resolve_for_tokens
from pipeline.token_store import TokenStore
from pipeline.training import TrainingRun, train
from stages.evaluate import EvaluateConfig, run as evaluate
from stages.train_teacher import TrainTeacherConfig, run as train_teacher
from tests.factories import TINY_TRAIN, micro_token_store, overrides


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return micro_token_store(str(tmp_path_factory.mktemp("tokens") / "store"))


def teacher(store, out, epochs=2, resume=False, steps=6, **train):
    config = TrainTeacherConfig(tokens=store, out=str(out), preset="tiny-teacher", resume=resume,
                                overrides=overrides(train={"epochs": epochs, "max_steps_per_epoch": steps, **train}))
    return train_teacher(config)


def weights(run_dir):
    return load(run_dir)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_metrics_per_epoch_and_evaluate_reproduces_last_epoch(store, tmp_path):
    last = teacher(store, tmp_path / "run", epochs=3, steps=40)
    events = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lines = [e for e in events if e["event"] == "epoch"]
    assert [l["epoch"] for l in lines] == [1, 2, 3]
    assert [e["epoch"] for e in events if e["event"] == "eval"] == [1, 2, 3]  # one evaluation point per epoch end
    assert lines[-1]["val_ppl"] < lines[0]["val_ppl"]  # it learns
    assert lines[-1]["tokens_seen"] == 3 * 40 * 4 * 16
    result = evaluate(EvaluateConfig(checkpoint=str(tmp_path / "run"), tokens=store, max_tokens=512,
                                     batch_size=TINY_TRAIN["eval_batch_size"]))  # same batches: same rounding
    assert result["perplexity"] == pytest.approx(last["val_ppl"], rel=1e-9)
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_json["kind"] == "teacher" and run_json["model"]["n_layer"] == 1


def test_evaluation_inside_epochs_changes_nothing_but_adds_points(store, tmp_path):
    plain = teacher(store, tmp_path / "plain", epochs=2, steps=8)
    fine = teacher(store, tmp_path / "fine", epochs=2, steps=8, eval_every=0.25)
    assert_same_weights(weights(tmp_path / "plain"), weights(tmp_path / "fine"))  # evaluation draws no randomness
    assert fine["val_ppl"] == plain["val_ppl"]
    events = [json.loads(l) for l in (tmp_path / "fine" / "metrics.jsonl").read_text().splitlines()]
    points = [e for e in events if e["event"] == "eval"]
    tokens_per_step = 4 * 16  # TINY_TRAIN batch 4, context 16
    assert [p["tokens_seen"] for p in points] == [s * tokens_per_step for s in (2, 4, 6, 8, 10, 12, 14, 16)]
    assert all(p["eval_time_s"] >= 0 and p["val_ppl"] > 1 for p in points)
    walls = [p["wall_time_s"] for p in points]
    assert walls == sorted(walls)
    by_tokens = teacher(store, tmp_path / "tokens", epochs=1, steps=8, eval_every=3 * tokens_per_step)
    events = [json.loads(l) for l in (tmp_path / "tokens" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "eval"] == [3, 6, 8] and by_tokens["val_ppl"] > 1


def test_resume_after_epoch_one_is_exact(store, tmp_path):
    teacher(store, tmp_path / "straight", epochs=2)
    teacher(store, tmp_path / "resumed", epochs=1)
    teacher(store, tmp_path / "resumed", epochs=2, resume=True)
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))


class InterruptAt(DataObjective):
    """The real objective; at call `step` it sends this process a real SIGINT (a Ctrl-C) `when` = "before" or
    "after" the forward pass, or raises KeyboardInterrupt there ("raise": a second Ctrl-C)."""

    def __init__(self, step, when="before"):
        self.step, self.when, self.calls = step, when, 0

    def __call__(self, model, batch, epoch, elapsed=None):
        self.calls += 1
        if self.calls == self.step and self.when in ("before", "raise"):
            self._interrupt()
        result = super().__call__(model, batch, epoch, elapsed)
        if self.calls == self.step and self.when == "after":
            self._interrupt()
        return result

    def _interrupt(self):
        if self.when == "raise":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGINT)


def interrupted_run(store, out, objective, epochs=2):
    tokens = TokenStore.open(store)
    model_config, train_config = resolve_for_tokens(
        "tiny-teacher", overrides(train={"epochs": epochs, "max_steps_per_epoch": 6}), tokens.vocab_size)
    return TrainingRun(out=out, kind="teacher", model_config=model_config, train_config=train_config,
                       tokens=tokens, objective=objective)


@pytest.fixture(scope="module")
def straight(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    teacher(store, out, epochs=2)
    return weights(out)


# Ctrl-C at several points: inside epoch 1 before a forward pass, inside epoch 2 after one (mid-step: the
# backward and optimizer step still follow), and in the last step of an epoch (stops before epoch 2).
@pytest.mark.parametrize("step, when, saved_at", [(3, "before", (1, 3)), (9, "after", (2, 3)), (6, "after", (2, 0))])
def test_ctrl_c_then_resume_equals_an_uninterrupted_run(store, straight, tmp_path, step, when, saved_at):
    with pytest.raises(InterruptedRun, match="--resume"):
        train(interrupted_run(store, tmp_path / "cut", InterruptAt(step, when)))
    position = load(tmp_path / "cut")["position"]
    assert (position["epoch"], position["step"]) == saved_at  # the step in progress was finished, then saved
    assert position["wall_time_s"] > 0  # the interrupted stretch counts
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    teacher(store, tmp_path / "cut", epochs=2, resume=True)
    assert_same_weights(straight, weights(tmp_path / "cut"))
    history = json.loads((tmp_path / "cut" / "run.json").read_text())["history"]
    assert [h["event"] for h in history] == ["start", "resume"] and history[1]["epoch"] == saved_at[0]


def test_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(store, tmp_path):
    with pytest.raises(InterruptedRun, match="stopped at once.*epoch 2, step 0"):
        train(interrupted_run(store, tmp_path / "cut", InterruptAt(9, "raise")))
    assert (load(tmp_path / "cut")["position"]["epoch"], load(tmp_path / "cut")["position"]["step"]) == (2, 0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_ddp_run(store, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               "-m", "pipeline", "train-teacher", "--tokens", store, "--out", str(out), "--preset", "tiny-teacher",
               "--epochs", "2", "--device", "cpu"]
    for key, value in overrides(train={"max_steps_per_epoch": 4})["model"].items():
        command += ["--set", f"model.{key}={value}"]
    for key, value in overrides(train={"max_steps_per_epoch": 4})["train"].items():
        command += ["--set", f"train.{key}={value}"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    lines = [l for l in lines if l["event"] == "epoch"]
    assert [l["epoch"] for l in lines] == [1, 2]  # rank 0 alone writes metrics
    assert lines[-1]["tokens_seen"] == 2 * 4 * 4 * 16 * 2  # both ranks' tokens are counted
    assert json.loads((out / "run.json").read_text())["world_size"] == 2


def test_cli_train_teacher_refuses_existing_run_and_bad_settings(store, tmp_path):
    runner = CliRunner()
    teacher(store, tmp_path / "run", epochs=1, steps=2)
    result = runner.invoke(main, ["train-teacher", "--tokens", store, "--out", str(tmp_path / "run"),
                                  "--preset", "tiny-teacher"])
    assert result.exit_code != 0 and "already holds a run" in result.output and "--force" in result.output
    result = runner.invoke(main, ["train-teacher", "--tokens", store, "--out", str(tmp_path / "x"),
                                  "--set", "model.n_head=5"])
    assert result.exit_code != 0 and "divisible" in result.output
    result = runner.invoke(main, ["train-teacher", "--tokens", str(tmp_path / "missing"), "--out", str(tmp_path / "y")])
    assert result.exit_code != 0 and "no such token store" in result.output
    result = runner.invoke(main, ["train-teacher", "--tokens", store, "--out", str(tmp_path / "z"), "--resume"])
    assert result.exit_code != 0 and "no checkpoint" in result.output
    assert "Traceback" not in result.output


def test_cli_evaluate_errors(store, tmp_path):
    runner = CliRunner()
    teacher(store, tmp_path / "run", epochs=1, steps=2)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((tmp_path / "run" / "checkpoint.pt").read_bytes()[:1000])
    result = runner.invoke(main, ["evaluate", "--checkpoint", str(corrupt), "--tokens", store])
    assert result.exit_code != 0 and "truncated or corrupt" in result.output
    other = micro_token_store(str(tmp_path / "other"), vocab_size=200)
    result = runner.invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "run"), "--tokens", other])
    assert result.exit_code != 0 and "vocabulary" in result.output
    result = runner.invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "run"), "--tokens", store,
                                  "--context", "64"])
    assert result.exit_code != 0 and "longer than the model's context" in result.output
    result = runner.invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "run"), "--tokens", store])
    assert result.exit_code == 0 and "val perplexity" in result.output


def test_a_store_without_held_out_split_trains_and_records_no_val_perplexity(store, tmp_path):
    import numpy as np

    from pipeline.token_store import TokenStoreMeta, write_token_store

    source = TokenStore.open(store)
    meta = TokenStoreMeta(vocab_size=source.vocab_size, dtype="", tokenizer={}, counts={}, manifest=[])
    empty_val = write_token_store(str(tmp_path / "noval"), {"train": source.read("train"), "val": np.zeros(0, np.int64)},
                                  source.vocab, meta)
    last = teacher(empty_val.location, tmp_path / "run", epochs=1, steps=2)
    assert last["val_ppl"] is None and last["train_ppl"] > 1


def test_tensorboard_mirrors_the_metrics(store, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    teacher(store, tmp_path / "run", epochs=1, steps=10, logger="tensorboard", eval_every=0.5)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    held_out = events.Scalars("perplexity/held_out")
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    points = [l for l in lines if l["event"] == "eval"]
    assert [(e.step, round(e.value, 3)) for e in held_out] == [(p["tokens_seen"], round(p["val_ppl"], 3)) for p in points]
    assert len(events.Scalars("loss/step")) == 1  # steps.jsonl's one line (every 10 steps)
