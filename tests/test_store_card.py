"""The store card (README.md at a logit store's root): what it says, when it is written, and `inspect` printing it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.checkpoint import load_model
from pipeline.cli import main
from pipeline.logit_store import LogitStore
from pipeline.store_card import render_card
from stages.tokenize import TokenizeConfig, run as tokenize
from stages.train_teacher import TrainTeacherConfig, run as train_teacher
from tests.factories import FIXTURE_CORPUS, overrides

BOOKS = ("jonah.txt", "ruth.txt", "esther.txt")
SHARDS = ["--shard-rows", "1024", "--chunk-rows", "256"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Three short books tokenized (one held out), a tiny teacher trained one short epoch, its top-8 dump."""
    root = tmp_path_factory.mktemp("card")
    tokenize(TokenizeConfig(corpus=[str(FIXTURE_CORPUS / b) for b in BOOKS], out=str(root / "tokens"), vocab_size=400,
                            val_fraction=0.3, workers=1, progress=False))
    train_teacher(TrainTeacherConfig(tokens=str(root / "tokens"), out=str(root / "teacher"), preset="tiny-teacher",
                                     overrides=overrides(train={"epochs": 1, "max_steps_per_epoch": 10})))
    result = invoke("dump-teacher", "--checkpoint", root / "teacher", "--tokens", root / "tokens", "--out",
                    root / "logits", "--top-k", 8, *SHARDS)
    assert result.exit_code == 0, result.output
    return root


def front_matter(card: str) -> dict:
    """The YAML front matter's key: value lines (values are JSON)."""
    head = card.split("---\n")[1]
    return {key: json.loads(value) for key, value in (line.split(": ", 1) for line in head.strip().splitlines())}


def test_the_card_describes_teacher_tokens_and_contents(made):
    card = (made / "logits" / "README.md").read_text(encoding="utf-8")
    store = LogitStore.open(str(made / "logits"))
    assert card == render_card(store.meta)  # rendered from the final metadata
    epochs = [json.loads(line) for line in (made / "teacher" / "metrics.jsonl").read_text().splitlines()]
    assert f"| held-out perplexity | {epochs[-1]['val_ppl']:.2f} (held-out split, after epoch 1 " in card
    sha = hashlib.sha256((made / "teacher" / "checkpoint.pt").read_bytes()).hexdigest()
    model, _ = load_model(str(made / "teacher"))
    assert f"`{sha}`" in card and f"| parameters | {sum(p.numel() for p in model.parameters()):,} |" in card
    assert "n_layer 1, d_model 32, n_head 2, d_ff 64, context 16" in card
    sizes = sum((FIXTURE_CORPUS / b).stat().st_size for b in BOOKS)
    assert f"| corpus | 3 files, {sizes:,} bytes (jonah.txt, ruth.txt, esther.txt); 0 skipped |" in card
    tokens = json.loads((made / "tokens" / "zarr.json").read_text())["attributes"]["superstill"]
    assert f"train {tokens['counts']['train_tokens']:,} in 2 documents; val {tokens['counts']['val_tokens']:,} in 1 document" in card
    assert f"`{tokens['fingerprint']}`" in card
    stats = store.meta.stats
    assert f"{stats['bytes_per_position']:.1f} bytes per position" in card
    mass = stats["topk_mass"]["val"]["6"]
    assert f"T = 6: mean {mass['mean']:.4f}, min {mass['min']:.4f}" in card
    assert "pipeline train-student --tokens TOKENS --teacher-logits STORE --temperature 6" in card
    assert "zarr.open_group" in card and "docs/STORE.md" in card
    assert front_matter(card) == {
        "format": "superstill.logits", "version": store.meta.version, "k": 8, "vocab_size": 400,
        "temperatures": [1.0, 6.0], "positions": {"train": tokens["counts"]["train_tokens"],
                                                  "val": tokens["counts"]["val_tokens"]},
        "token_fingerprint": tokens["fingerprint"], "teacher_checkpoint_sha256": sha, "precision": "fp32",
        "tool_version": store.meta.tool_version}
    assert str(made) not in card  # no local paths: the card travels with the store


def test_inspect_prints_the_card_after_the_summary(made):
    result = invoke("inspect", made / "logits")
    assert result.exit_code == 0, result.output
    summary, card = result.output.split("--- store card (")
    assert "integrity" in summary and "CRC32C OK" in summary
    assert card.split("---\n", 1)[1].strip() == (made / "logits" / "README.md").read_text().strip()


def test_a_teacher_without_its_run_directory_has_an_unknown_perplexity(made, tmp_path):
    shutil.copy(made / "teacher" / "checkpoint.pt", tmp_path / "teacher.pt")
    result = invoke("dump-teacher", "--checkpoint", tmp_path / "teacher.pt", "--tokens", made / "tokens",
                    "--out", tmp_path / "logits", "--top-k", 8, "--split", "val", *SHARDS)
    assert result.exit_code == 0, result.output
    card = (tmp_path / "logits" / "README.md").read_text()
    assert "| held-out perplexity | unknown (no evaluation of this checkpoint was found) |" in card


def test_the_card_is_written_atomically_at_finish_before_complete(made, tmp_path, monkeypatch):
    def full_disk(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("pipeline.storage.os.fsync", full_disk)  # only the card's atomic write syncs in a dump
    out = tmp_path / "logits"
    failed = invoke("dump-teacher", "--checkpoint", made / "teacher", "--tokens", made / "tokens", "--out", out,
                    "--top-k", 8, "--split", "val", *SHARDS)
    assert failed.exit_code == 1 and "No space left" in failed.output, failed.output
    assert sorted(p.name for p in out.iterdir()) == ["val", "zarr.json"]  # no card, no partial file
    assert not LogitStore.open(str(out), require_complete=False).meta.complete  # complete is written last
    monkeypatch.undo()
    resumed = invoke("dump-teacher", "--checkpoint", made / "teacher", "--tokens", made / "tokens", "--out", out,
                     "--top-k", 8, "--split", "val", "--resume", *SHARDS)
    assert resumed.exit_code == 0, resumed.output
    assert (out / "README.md").read_text() == render_card(LogitStore.open(str(out)).meta)
