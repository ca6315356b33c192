"""train-student: transition, store-fed == online, w1 = 0 == baseline, refusal of foreign stores, resume."""

import json

import pytest
import torch
from click.testing import CliRunner

from pipeline.batching import BatchStream, WindowPlan
from pipeline.checkpoint import load_model
from pipeline.cli import main
from pipeline.distillation import DistillationSpec
from pipeline.dump_spec import DumpSpec
from pipeline.logit_store import LogitStore
from pipeline.objectives import SuperstillObjective
from pipeline.spec_parsing import field_names
from pipeline.token_store import TokenStore
from stages.dump_teacher import DumpTeacherConfig, run as dump
from stages.train_student import TrainStudentConfig, run as train_student
from stages.train_teacher import TrainTeacherConfig, run as train_teacher
from tests.factories import micro_token_store, overrides
from tests.test_dump_teacher import SMALL_SHARDS
from tests.test_training import assert_same_weights, weights


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("student")
    tokens = micro_token_store(str(root / "tokens"))
    teacher = str(root / "teacher")
    train_teacher(TrainTeacherConfig(tokens=tokens, out=teacher, preset="tiny-teacher",
                                     overrides=overrides(train={"epochs": 1, "max_steps_per_epoch": 30})))
    vocab = TokenStore.open(tokens).vocab_size
    dump(DumpTeacherConfig.flat(checkpoint=teacher, tokens=tokens, out=str(root / "full"), top_k=vocab,
                           temperatures=[2.0], split="train", **SMALL_SHARDS))
    dump(DumpTeacherConfig.flat(checkpoint=teacher, tokens=tokens, out=str(root / "top8"), top_k=8, **SMALL_SHARDS))
    return {"tokens": tokens, "teacher": teacher, "full": str(root / "full"), "top8": str(root / "top8")}


def student(setup, out, epochs=2, steps=6, resume=False, train=None, **options):
    """Train a tiny student; options are TrainStudentConfig's and DistillationSpec's fields."""
    spec = {k: options.pop(k) for k in list(options) if k in field_names(DistillationSpec)}
    config = TrainStudentConfig(tokens=setup["tokens"], out=str(out), preset="tiny-student", resume=resume,
                                overrides=overrides(model={"n_layer": 2}, train={"epochs": epochs,
                                                                              "max_steps_per_epoch": steps, **(train or {})}),
                                distillation=DistillationSpec(**spec), **options)
    return train_student(config)


def events_of(out, kind="epoch"):
    return [e for e in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if e["event"] == kind]


def epochs_of(out):
    return events_of(out)


def test_transition_epoch_switches_to_plain_cross_entropy(setup, tmp_path):
    student(setup, tmp_path / "s", epochs=3, teacher_logits=setup["top8"], schedule="step", transition_epoch=2,
            temperature=1.0)
    lines = epochs_of(tmp_path / "s")
    assert [l["superstill"] for l in lines] == [True, True, False]
    assert lines[0]["loss_teacher"] is not None and lines[1]["loss_teacher"] is not None
    assert lines[2]["loss_teacher"] is None and lines[2]["loss"] == pytest.approx(lines[2]["loss_data"])
    steps = [json.loads(l) for l in (tmp_path / "s" / "steps.jsonl").read_text().splitlines()]
    assert all("loss_teacher" in s and "loss_data" in s for s in steps if s["epoch"] <= 2)


def test_store_fed_equals_online_when_the_store_holds_the_full_vocabulary(setup):
    tokens = TokenStore.open(setup["tokens"])
    store = LogitStore.open(setup["full"])
    teacher_model, _ = load_model(setup["teacher"])
    torch.manual_seed(0)
    from pipeline.model import GPT
    model = GPT(teacher_model.config).eval()  # any student; eval() so dropout draws no randomness
    ids = tokens.read("train")
    stream = BatchStream(ids, WindowPlan(ids.size, 16, 256, seed=0), 4, row_source=lambda lo, hi: store.read_rows("train", lo, hi))
    batch = next(iter(stream.epoch(1)))
    spec = DistillationSpec(temperature=2.0)
    stored = SuperstillObjective(spec)(model, batch, 1)
    online = SuperstillObjective(spec, teacher_model=teacher_model)(model, batch, 1)
    # float16 scores in the store are the only difference
    assert float(stored.loss.detach()) == pytest.approx(float(online.loss.detach()), rel=2e-4)
    assert float(stored.terms["loss_teacher"]) == pytest.approx(float(online.terms["loss_teacher"]), rel=2e-4)


def test_zero_teacher_weight_trains_like_the_baseline(setup, tmp_path):
    base = student(setup, tmp_path / "baseline")
    same = student(setup, tmp_path / "w0", teacher_logits=setup["top8"], w_teacher=0.0, w_data=1.0, temperature=1.0)
    assert json.loads((tmp_path / "baseline" / "run.json").read_text())["kind"] == "baseline"
    assert same["val_ppl"] == pytest.approx(base["val_ppl"], rel=1e-4)  # same data order, same init, same loss


def test_store_fed_resume_is_exact(setup, tmp_path):
    options = dict(teacher_logits=setup["top8"], temperature=6.0)
    student(setup, tmp_path / "straight", **options)
    student(setup, tmp_path / "resumed", epochs=1, **options)
    student(setup, tmp_path / "resumed", resume=True, **options)
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))


def test_foreign_or_incomplete_stores_and_bad_options_are_refused(setup, tmp_path):
    runner = CliRunner()
    other = micro_token_store(str(tmp_path / "other"), n_chars=30_000)
    base = ["train-student", "--preset", "tiny-student", "--set", "model.context=16"]
    result = runner.invoke(main, base + ["--tokens", other, "--out", str(tmp_path / "a"), "--teacher-logits", setup["top8"]])
    assert result.exit_code != 0 and "fingerprint" in result.output and "Traceback" not in result.output
    result = runner.invoke(main, base + ["--tokens", setup["tokens"], "--out", str(tmp_path / "b"),
                                         "--teacher-logits", setup["full"], "--teacher-checkpoint", setup["teacher"]])
    assert result.exit_code != 0 and "alternatives" in result.output
    result = runner.invoke(main, base + ["--tokens", setup["tokens"], "--out", str(tmp_path / "c"),
                                         "--teacher-logits", setup["top8"], "--transition-epoch", "soon"])
    assert result.exit_code != 0 and "--transition-epoch" in result.output
    result = runner.invoke(main, base + ["--tokens", setup["tokens"], "--out", str(tmp_path / "d"),
                                         "--teacher-logits", str(tmp_path / "nothing")])
    assert result.exit_code != 0 and "Traceback" not in result.output


TINY = ["--preset", "tiny-student", "--epochs", "1", "--set", "model.context=16", "--set", "model.d_model=32",
        "--set", "model.n_head=2", "--set", "model.d_ff=64", "--set", "train.max_steps_per_epoch=2",
        "--set", "train.batch_size=4", "--set", "train.eval_max_tokens=256"]


def superstill_of(setup, out, *options):
    """The teacher term a `train-student` command line trained with (as run.json records it)."""
    result = CliRunner().invoke(main, ["train-student", "--tokens", setup["tokens"], "--out", str(out),
                                       "--teacher-logits", setup["top8"], *TINY, *options])
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "run.json").read_text())["superstill"]
    return {name: recorded[name] for name in field_names(DistillationSpec)}


# The paper's teacher term (its section 3): T = 6, w1 = 0.6, w2 = 0.4, and a step down to plain cross-entropy.
PAPER = {"temperature": 6.0, "w_teacher": 0.6, "w_data": 0.4, "tail": "bucket", "schedule": "step"}


def test_defaults_are_the_recommendation_and_the_paper_is_one_flag_away(setup, tmp_path):
    assert superstill_of(setup, tmp_path / "default") == DistillationSpec().to_dict()
    paper = superstill_of(setup, tmp_path / "paper", "--distillation", "paper")
    assert {name: paper[name] for name in PAPER} == PAPER and paper["transition_epoch"] == "all"
    assert paper != DistillationSpec().to_dict()
    # dump-teacher's defaults store both temperatures exactly (others are only bounded: docs/STORE.md).
    assert {DistillationSpec().temperature, paper["temperature"]} <= set(DumpSpec().temperatures)
    # Options given beside the preset override it, the rest stays the paper's.
    tweaked = superstill_of(setup, tmp_path / "tr1", "--distillation", "paper", "--transition-epoch", "1",
                            "--temperature", "2")
    assert tweaked == {**paper, "transition_epoch": 1, "temperature": 2.0}


def test_help_names_the_default_and_the_paper_preset():
    text = CliRunner().invoke(main, ["train-student", "--help"]).output
    assert "--distillation [recommended|paper]" in text
    flat = " ".join(text.split())
    assert f"(default: {DistillationSpec().temperature:g}; --distillation paper: 6)" in flat
    assert f"(default: {DistillationSpec().schedule}; --distillation paper: step)" in flat


def test_a_transition_epoch_without_the_step_schedule_names_the_fix(setup, tmp_path):
    result = CliRunner().invoke(main, ["train-student", "--tokens", setup["tokens"], "--out", str(tmp_path / "x"),
                                       "--teacher-logits", setup["top8"], *TINY, "--transition-epoch", "1"])
    assert result.exit_code == 2 and "--transition-epoch belongs to the step schedule" in result.output
    assert "schedule step" in result.output and "Traceback" not in result.output


def test_renorm_with_little_top_k_mass_warns(setup, tmp_path):
    result = CliRunner().invoke(main, ["train-student", "--tokens", setup["tokens"], "--out", str(tmp_path / "r"),
                                       "--preset", "tiny-student", "--teacher-logits", setup["top8"], "--tail", "renorm",
                                       "--temperature", "6", "--epochs", "1", "--set", "model.context=16",
                                       "--set", "model.d_model=32", "--set", "model.n_head=2", "--set", "model.d_ff=64",
                                       "--set", "train.max_steps_per_epoch=2", "--set", "train.batch_size=4",
                                       "--set", "train.eval_max_tokens=256"])
    assert result.exit_code == 0, result.output
    assert "warning: --tail renorm at T=6" in result.output and "--tail bucket" in result.output


def test_linear_schedule_decays_the_teacher_weight_and_logs_its_phases(setup, tmp_path):
    """w1 falls linearly from 0.6 to 0 over epoch 2 while w2 rises (w1 + w2 = 1); each phase change is logged."""
    student(setup, tmp_path / "s", epochs=3, teacher_logits=setup["top8"], temperature=1.0, schedule="linear",
            decay_start=1.0, decay_epochs=1.0)
    phases = [(e["epoch"], e["phase"], e["w_teacher"]) for e in events_of(tmp_path / "s", "schedule")]
    assert [p[:2] for p in phases] == [(1, "full"), (2, "decaying"), (3, "off")]
    assert phases[0][2] == 0.6 and 0 < phases[1][2] < 0.6 and phases[2][2] == 0.0
    assert [e["superstill"] for e in epochs_of(tmp_path / "s")] == [True, True, False]
    assert "linear schedule" in events_of(tmp_path / "s", "schedule")[1]["reason"]


def test_auto_schedule_decays_once_the_student_reaches_the_teachers_recorded_cross_entropy(setup, tmp_path):
    teacher_nll = LogitStore.open(setup["top8"]).meta.stats["teacher_eval"]["val_nll"]
    student(setup, tmp_path / "s", epochs=3, steps=24, teacher_logits=setup["top8"], temperature=1.0,
            schedule="auto", decay_epochs=1.0, train={"eval_every": 0.25})
    points = events_of(tmp_path / "s", "eval")
    crossing = next(p for p in points if p["val_nll"] <= teacher_nll)  # the 2-layer student overtakes the teacher
    schedule = events_of(tmp_path / "s", "schedule")
    assert [e["phase"] for e in schedule][:2] == ["full", "decaying"]
    # w1 decays continuously from that evaluation, so the next step is the first one below full weight.
    assert schedule[1]["tokens_seen"] == crossing["tokens_seen"] + 4 * 16  # one step of 4 windows of 16 tokens
    assert "reached the teacher's" in schedule[1]["reason"]
