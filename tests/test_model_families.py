"""Model families (pipeline/model_families.py): the built-in gpt, two hf architectures (llama: attention, RoPE;
rwkv: recurrent, attention-free) and a factory model each train on real text and learn, checkpoint to a file
that loads with weights_only=True and gives the trained model's logits, and resume exactly. A store dumped by
a gpt teacher feeds an hf student exactly as the teacher run online would; compile, bf16 and DDP take hf
models too; gpt checkpoints written before families existed still load and resume.

The factory module is a real .py file written into a temporary folder on the Python path (FACTORY_SOURCE).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import pipeline.training
from pipeline.batching import BatchStream, WindowPlan
from pipeline.checkpoint import load, load_model
from pipeline.cli import main
from pipeline.config import ModelConfig, parse_override, to_dict
from pipeline.distillation import DistillationSpec
from pipeline.errors import UserError
from pipeline.logit_store import LogitStore
from pipeline.model import GPT
from pipeline.model_families import build_model
from pipeline.objectives import SuperstillObjective
from pipeline.run_settings import load_overrides, read_model_file, resolve_for_tokens
from pipeline.token_store import TokenStore
from stages.dump_teacher import DumpTeacherConfig, run as dump
from stages.train_student import TrainStudentConfig, run as train_student
from stages.train_teacher import TrainTeacherConfig, run as train_teacher
from tests.factories import TINY_MODEL, TINY_TRAIN, micro_token_store
from tests.test_dump_teacher import SMALL_SHARDS
from tests.test_training import assert_same_weights, free_port, weights

CONTEXT = TINY_MODEL["context"]
STEPS = 8  # per epoch; two epochs make the "straight" run every family's tests compare with
FACTORY_MODULE = "superstill_test_models"
SPECS = {
    "gpt": dict(TINY_MODEL),
    # attention_dropout draws randomness every step: exact resume must restore the RNG for hf models too
    "llama": {"family": "hf", "model_type": "llama", "context": CONTEXT, "options": {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "attention_dropout": 0.1}},
    # rwkv's initialization divides by num_hidden_layers - 1: two layers is its smallest
    "rwkv": {"family": "hf", "model_type": "rwkv", "context": CONTEXT, "options": {
        "hidden_size": 32, "attention_hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}},
    "factory": {"family": "factory", "factory": f"{FACTORY_MODULE}:build", "context": CONTEXT,
                "options": {"width": 32, "positions": CONTEXT, "dropout": 0.1}},
}
FAMILIES = list(SPECS)
HELD_OUT_TOKENS = 4096
NET_CLASSES = {"llama": "LlamaForCausalLM", "rwkv": "RwkvForCausalLM", "factory": "CausalMean"}

FACTORY_SOURCE = '''
"""A user's own architectures for tests/test_model_families.py (written to a temporary folder)."""
import torch
import torch.nn as nn


class CausalMean(nn.Module):
    """Token + learned position embeddings, mixed with the running mean of the past (causal), then a head."""

    def __init__(self, vocab_size, width, positions, dropout):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, width)
        self.positions = nn.Embedding(positions, width)  # shorter than the context: the probe fails
        self.drop = nn.Dropout(dropout)
        self.mix = nn.Linear(2 * width, width)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, ids):
        t = ids.shape[1]
        x = self.tokens(ids) + self.positions(torch.arange(t, device=ids.device))
        past = x.cumsum(1) / torch.arange(1, t + 1, device=ids.device).view(1, t, 1)
        return self.head(self.drop(torch.tanh(self.mix(torch.cat([x, past], -1)))))


def build(vocab_size, width=32, positions=16, dropout=0.0):
    return CausalMean(vocab_size, width, positions, dropout)


class Shaped(nn.Module):
    def __init__(self, vocab_size, extra, last_only):
        super().__init__()
        self.emb, self.last_only = nn.Embedding(vocab_size, vocab_size + extra), last_only

    def forward(self, ids):
        logits = self.emb(ids)
        return logits[:, -1] if self.last_only else logits


def one_too_many(vocab_size):
    """Logits [B, T, V + 1]."""
    return Shaped(vocab_size, 1, False)


def last_position_only(vocab_size):
    """Logits [B, V]."""
    return Shaped(vocab_size, 0, True)


def not_a_module(vocab_size):
    return "a model"
'''


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return micro_token_store(str(tmp_path_factory.mktemp("tokens") / "store"))


@pytest.fixture(scope="module")
def factory_module(tmp_path_factory):
    """The folder holding FACTORY_MODULE, on sys.path for this module's tests (and off it afterwards)."""
    folder = tmp_path_factory.mktemp("user_models")
    (folder / f"{FACTORY_MODULE}.py").write_text(FACTORY_SOURCE)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        yield folder
    sys.modules.pop(FACTORY_MODULE, None)


def overrides(spec: dict, **train) -> dict:
    return {"model": copy.deepcopy(spec), "train": {**TINY_TRAIN, "lr": 3e-3, "device": "cpu", **train}}


def train_run(store, out, spec, epochs=2, resume=False, steps=STEPS, **train):
    settings = overrides(spec, epochs=epochs, max_steps_per_epoch=steps, **train)
    return train_teacher(TrainTeacherConfig(tokens=store, out=str(out), preset="tiny-teacher", resume=resume,
                                            overrides=settings))


def resolved(store, spec) -> ModelConfig:
    """The spec as a training run resolves it (vocabulary from the store)."""
    return resolve_for_tokens("tiny-teacher", overrides(spec), TokenStore.open(store).vocab_size)[0]


@pytest.fixture(scope="module")
def straight(store, factory_module, tmp_path_factory):
    """family -> its uninterrupted 2-epoch run: out, last metrics, and the model object the loop trained."""
    runs, real_build = {}, build_model

    def run(family):
        if family not in runs:
            out, built = tmp_path_factory.mktemp(f"straight_{family}") / "run", []
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(pipeline.training, "build_model", lambda spec, **kw: built.append(real_build(spec, **kw))
                              or built[-1])
                last = train_run(store, out, SPECS[family])
            runs[family] = SimpleNamespace(out=out, last=last, model=built[0])
        return runs[family]
    return run


def held_out_nll(model, store) -> float:
    """Mean next-token cross-entropy over the val split's first HELD_OUT_TOKENS in non-overlapping windows: a
    plain reference, independent of pipeline.evaluation."""
    ids = torch.as_tensor(TokenStore.open(store).read("val")[:HELD_OUT_TOKENS + 1], dtype=torch.long)
    n = (ids.numel() - 1) // CONTEXT * CONTEXT
    inputs, targets = ids[:n].view(-1, CONTEXT), ids[1:n + 1].view(-1, CONTEXT)
    with torch.no_grad():
        logits = model.eval()(inputs)
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)))


def probe_ids(store) -> torch.Tensor:
    return torch.as_tensor(TokenStore.open(store).read("val")[:4 * CONTEXT], dtype=torch.long).view(4, CONTEXT)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_learns_from_real_text(store, straight, family):
    run = straight(family)
    torch.manual_seed(0)  # train.seed's default: the initial weights the run started from
    untrained = held_out_nll(build_model(resolved(store, SPECS[family])), store)
    trained = held_out_nll(load_model(run.out)[0], store)
    assert trained < untrained - 0.5, (family, untrained, trained)  # half a nat off a start near ln(V) = 5.7
    assert run.last["val_nll"] < untrained


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_records_the_spec_and_reloads_the_trained_model(store, straight, family):
    run = straight(family)
    payload = torch.load(run.out / "checkpoint.pt", map_location="cpu", weights_only=True)
    spec = resolved(store, SPECS[family])
    assert payload["model_config"] == to_dict(spec) and payload["model_config"]["family"] == spec.family
    if family != "gpt":
        assert payload["model_config"]["options"] == SPECS[family]["options"]
        assert payload["identity"]["model"] == to_dict(spec)
    else:  # identity as gpt checkpoints recorded it before families existed
        assert "family" not in payload["identity"]["model"]
    model, _ = load_model(run.out)
    assert model.spec == spec
    assert type(model if family == "gpt" else model.net).__name__ == NET_CLASSES.get(family, "GPT")
    ids = probe_ids(store)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), run.model.eval()(ids), rtol=0, atol=0)


# gpt: test_gpt_checkpoint_without_a_family_loads_and_resumes below (and tests/test_training.py)
@pytest.mark.parametrize("family", ["llama", "rwkv", "factory"])
def test_resume_after_epoch_one_is_exact(store, straight, family, tmp_path):
    train_run(store, tmp_path / "resumed", SPECS[family], epochs=1)
    train_run(store, tmp_path / "resumed", SPECS[family], epochs=2, resume=True)
    assert_same_weights(weights(straight(family).out), weights(tmp_path / "resumed"))


def test_gpt_checkpoint_without_a_family_loads_and_resumes(store, straight, tmp_path):
    """Checkpoints written before families existed record no model_config["family"]: they are gpt."""
    out = tmp_path / "old"
    train_run(store, out, SPECS["gpt"], epochs=1)
    payload = load(out)
    payload["model_config"].pop("family")
    torch.save(payload, out / "checkpoint.pt")
    model, _ = load_model(out)
    assert isinstance(model, GPT) and model.spec.family == "gpt"
    train_run(store, out, SPECS["gpt"], epochs=2, resume=True)
    assert_same_weights(weights(straight("gpt").out), weights(out))


# --- a gpt teacher's store feeds an hf student ---------------------------------------------------------

@pytest.fixture(scope="module")
def teacher_stores(store, straight, tmp_path_factory):
    """The trained gpt run as teacher: its full-vocabulary store at T = 2 and a top-8 store."""
    root, teacher = tmp_path_factory.mktemp("stores"), str(straight("gpt").out)
    vocab = TokenStore.open(store).vocab_size
    dump(DumpTeacherConfig.flat(checkpoint=teacher, tokens=store, out=str(root / "full"), top_k=vocab,
                                temperatures=[2.0], split="train", **SMALL_SHARDS))
    dump(DumpTeacherConfig.flat(checkpoint=teacher, tokens=store, out=str(root / "top8"), top_k=8, split="train",
                                **SMALL_SHARDS))
    return {"teacher": teacher, "full": str(root / "full"), "top8": str(root / "top8")}


@pytest.mark.parametrize("family", ["llama", "rwkv"])
def test_store_fed_hf_student_equals_online_at_full_vocabulary(store, teacher_stores, family):
    teacher_model, _ = load_model(teacher_stores["teacher"])
    torch.manual_seed(0)
    student = build_model(resolved(store, SPECS[family])).eval()  # eval(): dropout draws no randomness
    ids = TokenStore.open(store).read("train")
    full = LogitStore.open(teacher_stores["full"])
    stream = BatchStream(ids, WindowPlan(ids.size, CONTEXT, 256, seed=0), 4,
                         row_source=lambda lo, hi: full.read_rows("train", lo, hi))
    batch = next(iter(stream.epoch(1)))
    spec = DistillationSpec(temperature=2.0)
    stored = SuperstillObjective(spec)(student, batch, 1)
    online = SuperstillObjective(spec, teacher_model=teacher_model)(student, batch, 1)
    # float16 scores in the store are the only difference (tolerance as in tests/test_train_student.py)
    assert float(stored.loss.detach()) == pytest.approx(float(online.loss.detach()), rel=2e-4)
    assert float(stored.terms["loss_teacher"]) == pytest.approx(float(online.terms["loss_teacher"]), rel=2e-4)


def test_hf_student_trains_from_a_gpt_teachers_store(store, teacher_stores, tmp_path):
    config = TrainStudentConfig(tokens=store, out=str(tmp_path / "student"), preset="tiny-student",
                                overrides=overrides(SPECS["llama"], epochs=1, max_steps_per_epoch=4),
                                teacher_logits=teacher_stores["top8"], distillation=DistillationSpec(temperature=1.0))
    last = train_student(config)
    assert last["loss_teacher"] is not None and torch.isfinite(torch.tensor(last["loss"]))
    model, payload = load_model(tmp_path / "student")
    assert payload["model_config"]["model_type"] == "llama" and model.spec.family == "hf"


# --- compile, bf16, DDP for an hf family ---------------------------------------------------------------

LOSSES = ("loss", "train_nll", "val_nll")


@pytest.fixture(scope="module")
def eager(store, tmp_path_factory):
    """4 steps of the llama model, eager, fp32 on the CPU: what the compiled and bf16 runs are compared with."""
    out = tmp_path_factory.mktemp("eager") / "run"
    return SimpleNamespace(out=out, last=train_run(store, out, SPECS["llama"], epochs=1, steps=4, device="cpu"))


def test_compiled_hf_model_matches_eager(store, eager, tmp_path, compiled):
    metrics = train_run(store, tmp_path / "compiled", SPECS["llama"], epochs=1, steps=4, device="cpu", compile=True)
    assert len(compiled) == 1  # the training loop took the compile path
    for name in LOSSES:
        assert metrics[name] == pytest.approx(eager.last[name], rel=1e-6), name
    assert_same_weights(weights(eager.out), weights(tmp_path / "compiled"))  # the unwrapped model was saved


def test_bf16_autocast_trains_an_hf_model_like_fp32(store, eager, tmp_path):
    """Bound as in tests/test_gpu_paths_on_cpu.py: one bf16 rounding (2^-8) of each loss."""
    fp32 = eager.last
    bf16 = train_run(store, tmp_path / "bf16", SPECS["llama"], epochs=1, steps=4, device="cpu", precision="bf16")
    for name in LOSSES:
        assert bf16[name] == pytest.approx(fp32[name], rel=2.0 ** -8), name
    assert bf16["loss"] != fp32["loss"]  # autocast really ran in bf16
    model, _ = load_model(tmp_path / "bf16")
    with torch.no_grad():
        assert torch.isfinite(model(probe_ids(store))).all()


# Each rank runs the real CLI in-process, keeps the model object its training loop built, and saves that
# rank's final weights: DDP must leave both ranks with the same weights (and rank 0's are the checkpoint's).
DDP_SCRIPT = '''
import os, sys, torch
import pipeline.training
from pipeline.cli import main
from pipeline.model_families import build_model
built = []
pipeline.training.build_model = lambda spec, **kw: built.append(build_model(spec, **kw)) or built[-1]
main(sys.argv[1:], standalone_mode=False)
out = sys.argv[sys.argv.index("--out") + 1]
torch.save(built[0].state_dict(), f"{out}-rank{os.environ['RANK']}.pt")
'''


@pytest.mark.slow
def test_two_process_gloo_ddp_trains_an_hf_model(store, tmp_path):
    (tmp_path / "ddp_run.py").write_text(DDP_SCRIPT)
    (tmp_path / "llama.json").write_text(json.dumps(SPECS["llama"]))
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()), str(tmp_path / "ddp_run.py"),
               "train-teacher", "--tokens", store, "--out", str(out), "--preset", "tiny-teacher",
               "--model", str(tmp_path / "llama.json"), "--epochs", "2", "--device", "cpu"]
    for key, value in {**TINY_TRAIN, "max_steps_per_epoch": 4}.items():
        command += ["--set", f"train.{key}={value}"]
    root = str(Path(__file__).resolve().parents[1])  # the script imports pipeline from this checkout
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [l for l in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if l["event"] == "epoch"]
    assert [l["epoch"] for l in lines] == [1, 2]  # rank 0 alone writes metrics
    assert lines[-1]["tokens_seen"] == 2 * 4 * 4 * 16 * 2  # both ranks' tokens are counted
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    rank0, rank1 = (torch.load(f"{out}-rank{r}.pt", weights_only=True) for r in (0, 1))
    assert_same_weights(rank0, rank1)
    assert_same_weights(rank0, weights(out))
    assert load(out)["model_config"]["model_type"] == "llama"
    torch.manual_seed(0)
    untrained = build_model(resolved(store, SPECS["llama"]), probe=False).state_dict()  # the run's initial weights
    assert all(not torch.equal(untrained[k], rank0[k]) for k in rank0 if "weight" in k)  # every layer trained


# --- specs: parsed from --set and --model FILE, refused in one line before any run directory ---------------

def refused(store, out, *args: str) -> str:
    """train-teacher with these settings fails with one `Error: ...` line and leaves no run directory."""
    result = CliRunner().invoke(main, ["train-teacher", "--tokens", store, "--out", str(out), "--preset",
                                       "tiny-teacher", "--device", "cpu", *args])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
    assert not out.exists()
    return lines[0]


def model_file(folder, spec: dict, suffix: str = ".json"):
    path = folder / f"model{suffix}"
    path.write_text(json.dumps(spec))
    return str(path)


def test_unknown_family_is_refused(store, tmp_path):
    line = refused(store, tmp_path / "run", "--set", "model.family=rnn")
    assert "model.family must be one of gpt, hf, factory, got 'rnn'" in line


@pytest.mark.parametrize("setting, expected", [
    ("model.vocab_size=123", "model vocabulary (123) != token store vocabulary"),
    ("model.options.vocab_size=300", "model.options.vocab_size: the vocabulary comes from the token store"),
])
@pytest.mark.parametrize("family", ["llama", "factory"])
def test_a_vocabulary_other_than_the_token_stores_is_refused(store, factory_module, tmp_path, family, setting,
                                                              expected):
    line = refused(store, tmp_path / "run", "--model", model_file(tmp_path, SPECS[family]), "--set", setting)
    assert expected in line


def test_gpt_only_fields_on_another_family_are_refused(store, tmp_path):
    line = refused(store, tmp_path / "run", "--model", model_file(tmp_path, SPECS["llama"]), "--set", "model.n_layer=3")
    assert "model.n_layer only apply to the gpt family" in line and "model.options" in line
    line = refused(store, tmp_path / "run", "--set", "model.options.hidden_size=64")  # gpt (the preset)
    assert "model.options belongs to the hf family; set model.family too" in line


@pytest.mark.parametrize("text, value", [
    ("model.options.hidden_size=64", 64), ("model.options.attention_dropout=0.25", 0.25),
    ("model.options.tie_word_embeddings=false", False), ("model.options.hidden_act=silu", "silu"),
    ('model.options.hidden_act="gelu"', "gelu"), ("model.options.layer_types=[1, 2]", [1, 2]),
    ("model.options.rope_theta=1e4", 1e4),
])
def test_set_parses_model_options_as_toml_literals_or_text(text, value):
    section, name, parsed = parse_override(text)
    assert (section, name) == ("model", "options") and parsed == {text.split(".")[2].split("=")[0]: value}
    assert type(parsed[next(iter(parsed))]) is type(value)


def test_several_option_settings_add_up_and_later_ones_win(tmp_path):
    path = model_file(tmp_path, SPECS["llama"], ".toml")
    Path(path).write_text('family = "hf"\nmodel_type = "llama"\n[options]\nhidden_size = 32\nnum_hidden_layers = 1\n')
    overrides = load_overrides(None, ("model.options.hidden_size=64", "model.options.num_attention_heads=4"), {}, path)
    assert overrides["model"] == {"family": "hf", "model_type": "llama",
                                  "options": {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}}
    with pytest.raises(UserError, match="not an option name"):
        parse_override("model.options.hidden-size=3")


def test_model_files_in_toml_and_json_read_the_same(tmp_path):
    spec = SPECS["llama"]
    json_path = model_file(tmp_path, spec, ".json")
    options = ", ".join(f"{k} = {json.dumps(v)}" for k, v in spec["options"].items())
    toml_path = tmp_path / "model.toml"
    toml_path.write_text(f'[model]\nfamily = "hf"\nmodel_type = "llama"\ncontext = {CONTEXT}\n'
                         f"options = {{ {options} }}\n")
    assert read_model_file(json_path) == read_model_file(str(toml_path)) == spec
    (tmp_path / "bad.json").write_text('{"family": "hf",')
    with pytest.raises(UserError, match=r"--model .*bad.json: not valid JSON"):
        read_model_file(str(tmp_path / "bad.json"))
    (tmp_path / "odd.toml").write_text('family = "hf"\nlayers = 3\n')
    with pytest.raises(UserError, match="unknown setting model.layers"):
        read_model_file(str(tmp_path / "odd.toml"))
