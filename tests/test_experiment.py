"""`pipeline experiment`: end to end at toy size, resume between stages, config errors."""

import json

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.errors import UserError
from pipeline.experiment_config import builtin_names, load_experiment
from stages.experiment import ExperimentRunConfig, run
from tests.factories import CORPUS, corpus_files

TOY = """
name = "toy"
corpus = []
[tokenize]
vocab_size = 400
val_fraction = 0.2
workers = 1
[teacher]
preset = "tiny-teacher"
epochs = 1
[teacher.model]
context = 16
d_model = 32
n_head = 2
d_ff = 64
[teacher.train]
batch_size = 8
max_steps_per_epoch = 8
eval_max_tokens = 256
shuffle_block_tokens = 1024
[dump]
top_k = 8
temperatures = [1.0, 6.0]
[student]
preset = "tiny-student"
epochs = 2
[student.model]
context = 16
d_model = 32
n_head = 2
d_ff = 64
[student.train]
batch_size = 8
max_steps_per_epoch = 8
eval_max_tokens = 256
shuffle_block_tokens = 1024
[[variants]]
name = "t1"
temperature = 1.0
transition_epoch = 1
"""
SMALL_TEXTS = ["lovers_complaint.txt", "passionate_pilgrim.txt", "phoenix_and_the_turtle.txt", "sonnets.txt"]


@pytest.fixture
def toy(tmp_path):
    corpus_files(1)  # skips when the shared corpus is absent
    path = tmp_path / "toy.toml"
    path.write_text(TOY)
    return path, [str(CORPUS / name) for name in SMALL_TEXTS]


def test_interrupted_experiment_resumes_without_redoing_finished_stages(toy, tmp_path):
    path, corpus = toy
    out = tmp_path / "run"
    run(ExperimentRunConfig(experiment=str(path), out=str(out), corpus=corpus, stop_after="teacher"))
    state = json.loads((out / "state.json").read_text())["stages"]
    assert set(state) == {"tokens", "teacher"} and all(s["done"] for s in state.values())
    checkpoint_mtime = (out / "teacher" / "checkpoint.pt").stat().st_mtime_ns
    report = run(ExperimentRunConfig(experiment=str(path), out=str(out), corpus=corpus))
    assert (out / "teacher" / "checkpoint.pt").stat().st_mtime_ns == checkpoint_mtime  # not retrained
    state = json.loads((out / "state.json").read_text())["stages"]
    assert list(state) == ["tokens", "teacher", "teacher-logits", "baseline", "t1"]
    text = report.read_text()
    assert "baseline" in text and "t1" in text
    assert len(list((out / "figures").glob("*.png"))) >= 1
    metrics = [json.loads(l) for l in (out / "students" / "t1" / "metrics.jsonl").read_text().splitlines()]
    assert [m["superstill"] for m in metrics] == [True, False]


def test_edited_experiment_is_refused_without_force(toy, tmp_path):
    path, corpus = toy
    out = tmp_path / "run"
    run(ExperimentRunConfig(experiment=str(path), out=str(out), corpus=corpus, stop_after="tokens"))
    path.write_text(TOY.replace("vocab_size = 400", "vocab_size = 300"))
    with pytest.raises(UserError, match="--force"):
        run(ExperimentRunConfig(experiment=str(path), out=str(out), corpus=corpus, stop_after="tokens"))
    run(ExperimentRunConfig(experiment=str(path), out=str(out), corpus=corpus, stop_after="tokens", force=True))


@pytest.mark.parametrize("edit, message", [
    (lambda t: "learning = 1\n" + t, "unknown key(s) learning"),
    (lambda t: t + "\nlearning = 1\n", "[[variants]]: unknown key(s) learning"),
    (lambda t: t.replace('preset = "tiny-student"', 'preset = "huge"'), "unknown"),
    (lambda t: t.replace('name = "t1"', 'name = "baseline"'), "not 'baseline'"),
    (lambda t: t.replace("epochs = 2", "epochs = 0"), "train.epochs must be >= 1"),
    (lambda t: t.replace("[dump]", "[dump\n"), "not valid TOML"),
])
def test_config_errors_are_one_line(tmp_path, edit, message):
    path = tmp_path / "bad.toml"
    path.write_text(edit(TOY))
    result = CliRunner().invoke(main, ["experiment", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_shipped_experiments_load():
    assert {"demo", "paper-small", "paper-large"} <= set(builtin_names())
    small = load_experiment("paper-small")
    assert [v.transition_epoch for v in small.variants] == [14, "all"]
    assert [v.transition_epoch for v in load_experiment("paper-large").variants] == [1, 3]
    assert {v.temperature for v in load_experiment("demo").variants} == {1.0, 6.0}
