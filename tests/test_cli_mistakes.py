"""User mistakes against every command: one line naming the option/file and the fix, a non-zero exit, no
traceback, and nothing lost. Each case is a regression test for a mistake a reviewer made as a new user."""

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from pipeline.checkpoint import load
from pipeline.cli import main
from pipeline.distillation import DistillationSpec
from pipeline.token_store import TokenStore, TokenStoreMeta, write_token_store
from tests.factories import micro_token_store, overrides

TINY = [item for section, values in overrides(train={"max_steps_per_epoch": 3}).items()
        for key, value in values.items() for item in ("--set", f"{section}.{key}={value}")]


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit), \
        result.output
    return result, lines


def refused(*args, match: str, code: int = 2):
    result, errors = invoke(*args)
    assert result.exit_code == code, result.output
    assert len(errors) == 1 and match in errors[0], result.output
    return errors[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    tokens = micro_token_store(str(root / "tokens"))
    teacher = root / "teacher"
    result, _ = invoke("train-teacher", "--tokens", tokens, "--out", teacher, "--preset", "tiny-teacher",
                       "--epochs", "1", *TINY)
    assert result.exit_code == 0, result.output
    store = root / "logits"
    result, _ = invoke("dump-teacher", "--checkpoint", teacher, "--tokens", tokens, "--out", store, "--top-k", "8",
                       "--shard-rows", "4096", "--chunk-rows", "1024")
    assert result.exit_code == 0, result.output
    return {"root": root, "tokens": tokens, "teacher": teacher, "store": store}


def listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def student(world, out, *extra):
    return ("train-student", "--tokens", world["tokens"], "--out", out, "--preset", "tiny-student", "--epochs", "1",
            *TINY, *extra)


# --- nothing lost ---------------------------------------------------------------------------------------

def test_force_never_deletes_the_commands_own_input(world, tmp_path):
    before = listing(world["root"])
    refused("train-teacher", "--tokens", world["tokens"], "--out", world["tokens"], "--force", *TINY,
            match="is --tokens")
    refused("dump-teacher", "--checkpoint", world["teacher"], "--tokens", world["tokens"], "--out", world["teacher"],
            "--force", match="contains --checkpoint")
    refused(*student(world, world["store"], "--teacher-logits", world["store"], "--force"), match="is --teacher-logits")
    refused("tokenize", world["root"] / "corpus.txt", "--out", world["root"], "--force", match="contains CORPUS")
    assert listing(world["root"]) == before


def test_force_never_empties_the_current_directory_or_a_foreign_one(world, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    refused("train-teacher", "--tokens", world["tokens"], "--out", ".", "--force", *TINY, match="current directory")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.jpg").write_bytes(b"\xff")
    refused("train-teacher", "--tokens", world["tokens"], "--out", foreign, "--force", *TINY,
            match="not made by superstill")
    refused("dump-teacher", "--checkpoint", world["teacher"], "--tokens", world["tokens"], "--out", foreign, "--force",
            match="not made by superstill")
    assert (tmp_path / "notes.txt").read_text() == "mine" and (foreign / "a.jpg").exists()


def test_force_replaces_an_output_of_the_same_kind_only(world, tmp_path):
    refused("dump-teacher", "--checkpoint", world["teacher"], "--tokens", world["tokens"], "--out",
            world["tokens"], "--force", match="is --tokens")
    copy = tmp_path / "teacher-copy"
    shutil.copytree(world["teacher"], copy)
    refused("dump-teacher", "--checkpoint", world["teacher"], "--tokens", world["tokens"], "--out", copy, "--force",
            match="holds a run, not a logit store")


def test_evaluate_never_overwrites_a_file_it_did_not_write(world, tmp_path):
    checkpoint = world["teacher"] / "checkpoint.pt"
    before = checkpoint.read_bytes()
    base = ("evaluate", "--checkpoint", world["teacher"], "--tokens", world["tokens"], "--max-tokens", "64")
    refused(*base, "--out", checkpoint, "--force", match="is --checkpoint")
    (tmp_path / "notes.json").write_text("{}")
    refused(*base, "--out", tmp_path / "notes.json", match="already exists")
    refused(*base, "--out", tmp_path / "notes.json", "--force", match="not an evaluation result")
    result, _ = invoke(*base, "--out", tmp_path / "result.json")
    assert result.exit_code == 0, result.output
    refused(*base, "--out", tmp_path / "result.json", match="--force")
    result, _ = invoke(*base, "--out", tmp_path / "result.json", "--force")
    assert result.exit_code == 0 and checkpoint.read_bytes() == before


# --- nothing silently wrong -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def other_tokens(world):
    """Different ids, same vocabulary size: a teacher trained on one must not be dumped over the other."""
    source = TokenStore.open(world["tokens"])
    ids = {split: source.read(split)[::-1].copy() for split in ("train", "val")}
    meta = TokenStoreMeta(vocab_size=source.vocab_size, dtype="", tokenizer={}, counts={}, manifest=[])
    return write_token_store(str(world["root"] / "other-tokens"), ids, source.vocab, meta).location


def test_dump_refuses_a_teacher_trained_on_other_tokens(world, other_tokens, tmp_path):
    refused("dump-teacher", "--checkpoint", world["teacher"], "--tokens", other_tokens, "--out", tmp_path / "s",
            match="was trained on other tokens")
    assert not (tmp_path / "s").exists()
    result, _ = invoke("dump-teacher", "--checkpoint", world["teacher"], "--tokens", other_tokens, "--out",
                       tmp_path / "s", "--top-k", "4", "--allow-other-tokens", "--split", "val")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("change, differs", [
    (("--temperature", "2"), f"objective.temperature {DistillationSpec().temperature} in the checkpoint, 2.0 now"),
    (("--tail", "renorm"), "objective.tail 'bucket' in the checkpoint, 'renorm' now"),
    (("--lr", "0.01"), "train.lr"),
    (("--set", "model.n_layer=2"), "model.n_layer"),
    ((), "objective"),  # dropping the store: the baseline is another run
    ("other-tokens", "tokens"),
])
def test_resume_refuses_another_run_naming_the_difference(world, other_tokens, tmp_path, change, differs):
    out = tmp_path / "s"
    result, _ = invoke(*student(world, out, "--teacher-logits", world["store"]))
    assert result.exit_code == 0, result.output
    if change == "other-tokens":
        args = list(student(world, out, "--teacher-logits", world["store"], "--resume", "--epochs", "2"))
        args[args.index(world["tokens"])] = other_tokens
        refused(*args, match="fingerprint")  # the store does not belong to those tokens: refused earlier still
        args = list(student(world, out, "--resume", "--epochs", "2"))
        args[args.index(world["tokens"])] = other_tokens
        refused(*args, match=differs)
        return
    store = ("--teacher-logits", world["store"]) if change else ()
    error = refused(*student(world, out, *store, *change, "--resume", "--epochs", "2"), match=differs)
    assert "resume with the original settings" in error
    history = json.loads((out / "run.json").read_text())["history"]
    assert [h["event"] for h in history] == ["start"]  # the refused resume did not rewrite run.json


def test_resume_may_change_epochs_and_records_each_start(world, tmp_path):
    out = tmp_path / "s"
    assert invoke(*student(world, out, "--teacher-logits", world["store"]))[0].exit_code == 0
    result, _ = invoke(*student(world, out, "--teacher-logits", world["store"], "--resume", "--epochs", "2"))
    assert result.exit_code == 0, result.output
    record = json.loads((out / "run.json").read_text())
    assert [(h["event"], h["epoch"], h["epochs"]) for h in record["history"]] == [("start", 1, 1), ("resume", 2, 2)]
    assert load(out)["identity"]["teacher"].startswith("logit store sha256 ")


def test_a_diverging_run_stops_with_the_step_and_exit_code_3(world, tmp_path):
    result, errors = invoke("train-teacher", "--tokens", world["tokens"], "--out", tmp_path / "t", "--preset",
                            "tiny-teacher", "--epochs", "1", *TINY, "--lr", "1e30", "--set", "train.grad_clip=0")
    assert result.exit_code == 3 and "training diverged" in errors[0] and "step" in errors[0], result.output


# --- one line, never a traceback ------------------------------------------------------------------------

def test_bad_numbers_devices_and_types_are_one_line(world, tmp_path, monkeypatch):
    base = ("train-teacher", "--tokens", world["tokens"], "--out", tmp_path / "t", "--preset", "tiny-teacher", *TINY)
    refused(*base, "--lr", "inf", match="train.lr: expected a finite number, got inf")
    refused(*base, "--device", "bogus", match="'bogus' is not a device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    refused(*base, "--device", "cuda", match="no CUDA GPU is visible")
    refused(*base, "--set", "train.epochs=two", match="--set train.epochs: expected an integer")
    refused(*base, "--set", "train.betas=0.9", match="expected 2 values")
    (tmp_path / "c.toml").write_text('[train]\nbatch_size = "8"\n[model]\ndropout = [0.1]\n')
    refused(*base, "--config", tmp_path / "c.toml", match='train.batch_size: expected an integer, got "8"')
    refused("train-teacher", "--tokens", "nosuchscheme://x/tokens", "--out", tmp_path / "u", match="nosuchscheme://")
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("option, value", [("--batch-size", "0"), ("--context", "-1"), ("--fraction", "0"),
                                           ("--max-tokens", "-5")])
def test_evaluate_option_ranges(world, option, value):
    refused("evaluate", "--checkpoint", world["teacher"], "--tokens", world["tokens"], option, value, match=option)


def test_validate_option_ranges(world):
    refused("validate", world["store"], "--tokens", world["tokens"], "--checkpoint", world["teacher"], "--sample", "-1",
            match="--sample must be >= 1")
    refused("validate", world["store"], "--tokens", world["tokens"], "--device", "gpu0", match="'gpu0' is not a device")


def test_non_finite_weights_are_refused_by_every_reader(world, tmp_path):
    payload = load(world["teacher"])
    name = next(iter(payload["model"]))
    payload["model"][name] = torch.full_like(payload["model"][name], float("nan"))
    torch.save(payload, tmp_path / "broken.pt")
    refused("evaluate", "--checkpoint", tmp_path / "broken.pt", "--tokens", world["tokens"],
            match="holds non-finite weights")
    refused("dump-teacher", "--checkpoint", tmp_path / "broken.pt", "--tokens", world["tokens"], "--out",
            tmp_path / "s", match="holds non-finite weights")
    refused(*student(world, tmp_path / "o", "--teacher-checkpoint", tmp_path / "broken.pt"),
            match="holds non-finite weights")


def test_outputs_in_impossible_places_fail_before_work(world, tmp_path):
    (tmp_path / "file").write_text("x")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("in the beginning was the word\n")
    refused("tokenize", corpus, "--out", tmp_path / "file" / "tokens", match="is a file, not a directory")
    refused("train-teacher", "--tokens", world["tokens"], "--out", tmp_path / "file", *TINY, match="is a file")
    refused("experiment", "demo", "--out", tmp_path / "file", match="is a file")
