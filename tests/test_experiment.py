"""`pipeline experiment`: end to end at toy size, resume between stages, config errors."""

import json

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.distillation import DistillationSpec
from pipeline.errors import UserError
from pipeline.experiment_config import builtin_names, load_experiment
from stages.experiment import ExperimentRunConfig, run
from tests.factories import FIXTURE_CORPUS

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
schedule = "step"
transition_epoch = 1
"""
SMALL_TEXTS = sorted(FIXTURE_CORPUS.glob("*.txt"), key=lambda path: path.stat().st_size)[:4]  # the shortest books


@pytest.fixture
def toy(tmp_path):
    path = tmp_path / "toy.toml"
    path.write_text(TOY)
    return path, [str(text) for text in SMALL_TEXTS]


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
    assert list(state) == ["tokens", "teacher", "teacher-logits", "baseline/seed-0", "t1/seed-0"]
    text = report.read_text()
    assert "baseline" in text and "t1" in text
    assert len(list((out / "figures").glob("*.png"))) >= 1
    metrics = [json.loads(l) for l in (out / "students" / "t1" / "seed-0" / "metrics.jsonl").read_text().splitlines()]
    assert [m["superstill"] for m in metrics if m["event"] == "epoch"] == [True, False]


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
    (lambda t: t + "\nlearning = 1\n", "[[variants]] t1: unknown key(s) learning"),
    (lambda t: t.replace("epochs = 2", 'epochs = "2"'), '[student] epochs: expected an integer, got "2" (a string)'),
    (lambda t: t.replace("batch_size = 8", "batch_size = 8.5", 1), "train.batch_size: expected an integer, got 8.5"),
    (lambda t: t.replace("[teacher.train]", "[teacher.train]\nbetas = 0.9"), "train.betas: expected a list"),
    (lambda t: t.replace("temperature = 1.0", 'temperature = "hot"'), 't1.temperature: expected a number, got "hot"'),
    (lambda t: t.replace("top_k = 8", "top_k = [8]"), "[dump] top_k: expected an integer"),
    (lambda t: t.replace("vocab_size = 400", "vocab_size = 4.5"), "[tokenize] vocab_size: expected an integer"),
    (lambda t: t.replace("workers = 1", "workers = 0"), "--workers 0: must be at least 1"),
    (lambda t: t.replace("[teacher.train]", "[teacher.train]\nlr = inf"), "train.lr: expected a finite number"),
    (lambda t: t.replace("[teacher.train]", "[teacher.train]\ndevice = \"gpu\""), "'gpu' is not a device"),
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


def test_every_stage_is_validated_before_any_runs(toy, tmp_path):
    """A bad student setting fails in the first second: no tokens, no teacher, no experiment.json."""
    path, corpus = toy
    path.write_text(TOY.replace("temperature = 1.0", "temperature = -1.0"))
    result = CliRunner().invoke(main, ["experiment", str(path), "--out", str(tmp_path / "run"), "--corpus", corpus[0]])
    assert result.exit_code == 2 and "temperature must be a finite number > 0" in result.output
    assert not (tmp_path / "run").exists()


def test_stop_after_takes_only_stage_names(toy, tmp_path):
    path, corpus = toy
    result = CliRunner().invoke(main, ["experiment", str(path), "--out", str(tmp_path / "run"), "--corpus", corpus[0],
                                       "--stop-after", "techer"])
    assert result.exit_code == 2 and "--stop-after 'techer' is not a stage" in result.output
    assert "tokens, teacher, teacher-logits, baseline/seed-0, t1/seed-0" in result.output
    assert not (tmp_path / "run").exists()


def test_outputs_from_stage_commands_are_never_replaced_without_force(toy, tmp_path):
    """tokens/ made by `pipeline tokenize` in the experiment directory: refused, kept, then replaced with --force."""
    path, corpus = toy
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["tokenize", *corpus, "--out", str(out / "tokens"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    before = sorted(p.name for p in (out / "tokens").iterdir())
    corpus_options = [item for text in corpus for item in ("--corpus", text)]
    result = CliRunner().invoke(main, ["experiment", str(path), "--out", str(out), *corpus_options])
    assert result.exit_code == 2 and "did not make it" in result.output and "--force" in result.output
    assert sorted(p.name for p in (out / "tokens").iterdir()) == before
    assert not (out / "experiment.json").exists() and not (out / "state.json").exists()
    run(ExperimentRunConfig(experiment=str(path), out=str(out), corpus=corpus, stop_after="tokens", force=True))
    assert json.loads((out / "state.json").read_text())["stages"]["tokens"]["done"]


def test_a_refused_experiment_leaves_experiment_json_as_it_was(toy, tmp_path):
    path, corpus = toy
    out = tmp_path / "run"
    run(ExperimentRunConfig(experiment=str(path), out=str(out), corpus=corpus, stop_after="tokens"))
    recorded = (out / "experiment.json").read_text()
    path.write_text(TOY.replace("vocab_size = 400", "vocab_size = 300"))
    with pytest.raises(UserError, match="--force"):
        run(ExperimentRunConfig(experiment=str(path), out=str(out), corpus=corpus, stop_after="tokens"))
    assert (out / "experiment.json").read_text() == recorded


def test_experiment_out_that_is_a_file_or_inside_the_corpus_is_refused(toy, tmp_path):
    path, corpus = toy
    (tmp_path / "file").write_text("x")
    for out, message in ((tmp_path / "file", "is a file"), (tmp_path / "corpus" / "run", "lies inside --corpus")):
        (tmp_path / "corpus").mkdir(exist_ok=True)
        (tmp_path / "corpus" / "a.txt").write_text("some words here\n")
        result = CliRunner().invoke(main, ["experiment", str(path), "--out", str(out),
                                           "--corpus", str(tmp_path / "corpus")])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_seeds_pair_baseline_and_variants_and_resume_per_seed(toy, tmp_path):
    """One teacher and store; baseline and t1 once per seed, same init and data order within a seed."""
    path, corpus = toy
    out = tmp_path / "run"
    run(ExperimentRunConfig(experiment=str(path), out=str(out), corpus=corpus, seeds=[3, 5], stop_after="t1/seed-3"))
    state = json.loads((out / "state.json").read_text())["stages"]
    assert list(state)[-2:] == ["baseline/seed-3", "t1/seed-3"]
    run(ExperimentRunConfig(experiment=str(path), out=str(out), corpus=corpus, seeds=[3, 5]))
    state = json.loads((out / "state.json").read_text())["stages"]
    assert list(state)[3:] == ["baseline/seed-3", "t1/seed-3", "baseline/seed-5", "t1/seed-5"]
    seeds = {(run_dir.parent.name, json.loads((run_dir / "run.json").read_text())["train"]["seed"])
             for run_dir in (out / "students").glob("*/seed-*")}
    assert seeds == {("baseline", 3), ("t1", 3), ("baseline", 5), ("t1", 5)}
    first = [json.loads(l) for l in (out / "students" / "baseline" / "seed-3" / "metrics.jsonl").read_text().splitlines()]
    second = [json.loads(l) for l in (out / "students" / "baseline" / "seed-5" / "metrics.jsonl").read_text().splitlines()]
    assert first[-1]["val_ppl"] != second[-1]["val_ppl"]  # other seeds: other runs


@pytest.mark.parametrize("seeds, message", [("0,0", "distinct seeds"), ("-1", "distinct seeds >= 0"),
                                            ("a", "--seeds[0]: expected an integer")])
def test_bad_seeds_are_one_line(toy, tmp_path, seeds, message):
    path, corpus = toy
    result = CliRunner().invoke(main, ["experiment", str(path), "--out", str(tmp_path / "run"), "--seeds", seeds])
    assert result.exit_code == 2 and message in result.output and not (tmp_path / "run").exists()


def test_shipped_experiments_load():
    assert {"demo", "paper-small", "paper-large"} <= set(builtin_names())
    small = load_experiment("paper-small")
    assert [v.distillation.transition_epoch for v in small.variants] == [14, "all"]
    assert [v.distillation.transition_epoch for v in load_experiment("paper-large").variants] == [1, 3]
    demo = load_experiment("demo")
    assert len(demo.seeds) == 3 and demo.student.train["eval_every"] > 0  # intervals over seeds, fine-grained curves
    # The demo shows the paper's setting and the recommended default (the spec's defaults) beside the baseline.
    specs = {v.name: v.distillation for v in demo.variants}
    assert DistillationSpec() in specs.values()
    assert {(s.temperature, s.schedule, s.transition_epoch) for s in specs.values()} >= {(6.0, "step", 1)}
    other = load_experiment("demo-kjv")  # the demo's protocol on another corpus: its figures compare with the demo's
    assert {v.name: v.distillation for v in other.variants} == specs and other.corpus != demo.corpus
    assert (other.seeds, other.teacher, other.student, other.dump) == \
           (demo.seeds, demo.teacher, demo.student, demo.dump)


def test_a_variant_starts_from_a_named_preset(toy, tmp_path):
    path, _ = toy
    text = path.read_text().replace('temperature = 1.0\nschedule = "step"\n', 'distillation = "paper"\n')
    (tmp_path / "paper.toml").write_text(text)
    spec = load_experiment(str(tmp_path / "paper.toml")).variants[0].distillation
    # The paper's teacher term (its section 3): T = 6, w1 = 0.6, w2 = 0.4, step schedule; the table's keys win.
    assert (spec.temperature, spec.w_teacher, spec.w_data, spec.schedule, spec.transition_epoch) == \
           (6.0, 0.6, 0.4, "step", 1)
    (tmp_path / "bad.toml").write_text(text.replace('distillation = "paper"', 'distillation = "papr"'))
    result = CliRunner().invoke(main, ["experiment", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "t1 distillation: expected one of recommended, paper, got 'papr'" in result.output
    (tmp_path / "mixed.toml").write_text(text.replace('distillation = "paper"\n', ''))
    result = CliRunner().invoke(main, ["experiment", str(tmp_path / "mixed.toml"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "transition_epoch belongs to the step schedule" in result.output


LLAMA = """
[architectures.llama]
preset = "tiny-llama-student"
epochs = 2
[architectures.llama.model]
context = 16
[architectures.llama.model.options]
hidden_size = 32
intermediate_size = 64
num_attention_heads = 2
num_hidden_layers = 1
[architectures.llama.train]
batch_size = 8
max_steps_per_epoch = 8
eval_max_tokens = 256
shuffle_block_tokens = 1024
"""
STEP_VARIANTS = """
[[variants]]
name = "t1"
temperature = 1.0
schedule = "step"
transition_epoch = 1
[[variants]]
name = "llama-t1"
student = "llama"
temperature = 1.0
schedule = "step"
transition_epoch = 1
"""


def write_toy(tmp_path, text: str):
    path = tmp_path / "arch.toml"
    path.write_text(text)
    return path


def test_each_architecture_trains_its_own_baseline_and_is_compared_with_it(tmp_path):
    path = write_toy(tmp_path, TOY.split("[[variants]]")[0] + LLAMA + STEP_VARIANTS)
    out = tmp_path / "run"
    report = run(ExperimentRunConfig(experiment=str(path), out=str(out), corpus=[str(t) for t in SMALL_TEXTS]))
    state = json.loads((out / "state.json").read_text())["stages"]
    assert list(state)[3:] == ["baseline/seed-0", "baseline-llama/seed-0", "t1/seed-0", "llama-t1/seed-0"]
    runs = {name: json.loads((out / "students" / name / "seed-0" / "run.json").read_text())
            for name in ("baseline", "baseline-llama", "t1", "llama-t1")}
    assert [runs[name]["model"]["family"] for name in runs] == ["gpt", "hf", "gpt", "hf"]
    assert runs["llama-t1"]["model"] == runs["baseline-llama"]["model"]  # paired: the very same spec
    assert runs["llama-t1"]["superstill"]["teacher_logits"] == runs["t1"]["superstill"]["teacher_logits"]
    text = report.read_text()
    assert "| llama-t1 | baseline-llama | hf:llama | held-out |" in text
    assert "| t1 | baseline | gpt | held-out |" in text


@pytest.mark.parametrize("text, message", [
    (STEP_VARIANTS, "no [architectures.llama] table"),
    (LLAMA.replace("[architectures.llama", "[architectures.baseline-x") + STEP_VARIANTS.replace('"llama"', '"baseline-x"'),
     "architecture name 'baseline-x'"),
    (LLAMA.replace("hidden_size = 32", "hidden_size = 32\nhidden_sise = 3") + STEP_VARIANTS, "model.options.hidden_sise"),
    (LLAMA.replace("context = 16", "context = 16\n[architectures.llama.model.options]\nmax_position_embeddings = 8")
     .replace("[architectures.llama.model.options]\nhidden_size", "hidden_size") + STEP_VARIANTS,
     "longer than the llama model supports"),
])
def test_a_bad_architecture_is_refused_before_any_stage_runs(tmp_path, text, message):
    path = write_toy(tmp_path, TOY.split("[[variants]]")[0] + text)
    result = CliRunner().invoke(main, ["experiment", str(path), "--out", str(tmp_path / "run"),
                                       "--corpus", str(SMALL_TEXTS[0])])
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert result.exit_code != 0 and len(errors) == 1 and message in errors[0], result.output
    assert not (tmp_path / "run" / "tokens").exists()


def test_shipped_cross_architecture_experiment_pairs_each_student_with_its_own_baseline():
    experiment = load_experiment("cross-architecture")
    assert set(experiment.architectures) == {"llama", "rwkv"}
    assert [(name, architecture) for name, _, architecture in experiment.students()] == [
        ("baseline", None), ("baseline-llama", "llama"), ("baseline-rwkv", "rwkv"),
        ("gpt-superstilled", None), ("llama-superstilled", "llama"), ("rwkv-superstilled", "rwkv")]
