"""The factory family (pipeline/factory_models.py): a user's .py file, never installed, works end to end
through the CLI (baseline, dump-teacher, store-fed student, evaluate), and every way it can be wrong is a
one-line error before any run directory exists."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from click.testing import CliRunner

from pipeline.checkpoint import load, load_model
from pipeline.cli import main
from pipeline.config import ModelConfig
from pipeline.errors import UserError
from pipeline.logit_store import LogitStore
from pipeline.model_families import build_model
from pipeline.token_store import TokenStore
from tests.factories import TINY_TRAIN, tiny_teacher
from tests.test_model_families import (CONTEXT, FACTORY_MODULE, FACTORY_SOURCE, SPECS, factory_module,  # noqa: F401
                                       refused)

TOP_K = 8


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def tiny_settings(steps: int = 4) -> list[str]:
    values = {**TINY_TRAIN, "max_steps_per_epoch": steps}
    return [arg for key, value in values.items() for arg in ("--set", f"train.{key}={value}")]


@pytest.fixture(scope="module")
def world(tmp_path_factory, factory_module):  # noqa: F811
    """A token store, a tiny gpt teacher and its top-8 store, and the factory spec as a --model TOML file."""
    root = tmp_path_factory.mktemp("factory")
    tokens, teacher = tiny_teacher(root)
    cli("dump-teacher", "--checkpoint", teacher, "--tokens", tokens, "--out", str(root / "gpt_store"),
        "--top-k", str(TOP_K), "--split", "train", "--device", "cpu", "--shard-rows", "2048", "--chunk-rows", "512")
    options = ", ".join(f"{k} = {json.dumps(v)}" for k, v in SPECS["factory"]["options"].items())
    (root / "mine.toml").write_text(f'family = "factory"\nfactory = "{FACTORY_MODULE}:build"\ncontext = {CONTEXT}\n'
                                    f"options = {{ {options} }}\n")
    return {"root": root, "tokens": tokens, "gpt_store": str(root / "gpt_store"), "model": str(root / "mine.toml")}


def student(world, out, *args: str) -> list[str]:
    return ["train-student", "--tokens", world["tokens"], "--out", str(out), "--preset", "tiny-student",
            "--model", world["model"], "--epochs", "1", "--device", "cpu", *tiny_settings(), *args]


def test_a_factory_model_works_end_to_end_through_the_cli(world, tmp_path):
    cli(*student(world, tmp_path / "baseline"))
    cli(*student(world, tmp_path / "student", "--teacher-logits", world["gpt_store"], "--temperature", "1"))
    for run, kind in ((tmp_path / "baseline", "baseline"), (tmp_path / "student", "student")):
        assert json.loads((run / "run.json").read_text())["kind"] == kind
        payload = load(run)
        assert payload["model_config"]["family"] == "factory"
        assert payload["model_config"]["factory"] == f"{FACTORY_MODULE}:build"
        output = cli("evaluate", "--checkpoint", str(run), "--tokens", world["tokens"], "--device", "cpu")
        assert "val perplexity" in output
    lines = [json.loads(l) for l in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    (epoch,) = [l for l in lines if l["event"] == "epoch"]
    assert epoch["superstill"] and epoch["loss_teacher"] > 0  # the store fed it


def test_a_factory_teacher_dumps_its_own_top_k(world, tmp_path):
    """dump-teacher runs a factory model whole (no separable head): its stored rows are its logits' top k."""
    cli(*student(world, tmp_path / "run"))
    cli("dump-teacher", "--checkpoint", str(tmp_path / "run"), "--tokens", world["tokens"], "--out",
        str(tmp_path / "store"), "--top-k", str(TOP_K), "--split", "train", "--device", "cpu",
        "--shard-rows", "2048", "--chunk-rows", "512")
    store = LogitStore.open(str(tmp_path / "store"))
    assert store.meta.teacher["model"]["family"] == "factory"
    model, _ = load_model(tmp_path / "run")
    ids = torch.as_tensor(TokenStore.open(world["tokens"]).read("train")[:CONTEXT], dtype=torch.long)
    with torch.no_grad():
        logits = model(ids[None])[0]  # the first window owns its first CONTEXT positions
    top = logits.topk(TOP_K, dim=-1)
    rows = store.read_rows("train", 0, CONTEXT)
    assert torch.equal(rows.ids, top.indices)
    torch.testing.assert_close(rows.scores.float(), top.values - top.values[:, :1], rtol=0, atol=2e-2)  # float16


def test_a_factory_module_in_the_working_directory_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the seam appends the working directory; undo it after
    (tmp_path / "cwd_models_for_test.py").write_text(FACTORY_SOURCE)
    monkeypatch.chdir(tmp_path)
    try:
        model = build_model(ModelConfig(family="factory", factory="cwd_models_for_test:build", vocab_size=50,
                                        context=CONTEXT, options={"width": 8}))
    finally:
        sys.modules.pop("cwd_models_for_test", None)
    assert model(torch.zeros(2, CONTEXT, dtype=torch.long)).shape == (2, CONTEXT, 50)


@pytest.mark.parametrize("factory, options, expected", [
    ("no_such_models_for_test:build", {}, "no module 'no_such_models_for_test'"),
    (f"{FACTORY_MODULE}:missing", {}, "has no function 'missing'"),
    (f"{FACTORY_MODULE}:build", {"depth": 3}, "refused its arguments"),
    (f"{FACTORY_MODULE}:not_a_module", {}, "not a torch.nn.Module"),
    (f"{FACTORY_MODULE}:one_too_many", {}, "not logits [1, 16, "),
    (f"{FACTORY_MODULE}:last_position_only", {}, "not logits [1, 16, "),
    (f"{FACTORY_MODULE}:build", {"positions": CONTEXT // 2}, "forward pass over one window of model.context=16"),
])
def test_a_wrong_factory_is_refused_before_the_run_starts(world, tmp_path, factory, options, expected):
    model = tmp_path / "model.json"
    model.write_text(json.dumps({"family": "factory", "factory": factory, "context": CONTEXT, "options": options}))
    line = refused(world["tokens"], tmp_path / "run", "--model", str(model))  # and no run directory
    assert expected in line and factory in line


def test_a_factory_module_that_raises_on_import_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "broken_models_for_test.py").write_text("import torch\nraise RuntimeError('half-written\\nmodule')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = ModelConfig(family="factory", factory="broken_models_for_test:build", vocab_size=50, context=CONTEXT)
    with pytest.raises(UserError, match=r"importing broken_models_for_test failed \(RuntimeError: half-written\)$"):
        build_model(spec)
    sys.modules.pop("broken_models_for_test", None)
