"""dump-teacher and validate against a real tiny teacher: values, k = V, resume, ranks, URLs, errors."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.checkpoint import load_model
from pipeline.cli import main
from pipeline.logit_store import LogitStore, LogitStoreWriter
from pipeline.teacher_windows import owner
from pipeline.token_store import TokenStore
from stages.dump_teacher import DumpTeacherConfig, run as dump
from stages.train_teacher import TrainTeacherConfig, run as train_teacher
from tests.factories import micro_token_store, overrides
from tests.test_training import free_port

SMALL_SHARDS = {"shard_rows": 2048, "chunk_rows": 512}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("dump")
    store = micro_token_store(str(root / "tokens"))
    train_teacher(TrainTeacherConfig(tokens=store, out=str(root / "teacher"), preset="tiny-teacher",
                                     overrides=overrides(train={"epochs": 1, "max_steps_per_epoch": 30})))
    return store, str(root / "teacher")


def dump_to(teacher, out, **options):
    store, checkpoint = teacher
    return dump(DumpTeacherConfig.flat(checkpoint=checkpoint, tokens=store, out=str(out), **{**SMALL_SHARDS, **options}))


def reference_rows(model, ids, position, context, stride, temperature, k):
    """Dense reference: the owner window's logits at the position, softened and ranked by hand."""
    window = owner(position, context, stride, ids.size)
    with torch.no_grad():
        z = model(torch.from_numpy(ids[window.start:window.stop].astype(np.int64))[None])[0, position - window.start]
    logp = torch.log_softmax(z.double() / temperature, dim=-1)
    top = torch.topk(z.double(), k).indices
    return top, logp[top], 1 - logp[top].exp().sum()


@pytest.mark.parametrize("stride", [16, 5])
def test_stored_rows_equal_a_direct_teacher_forward(teacher, tmp_path, stride):
    dump_to(teacher, tmp_path / "logits", stride=stride, top_k=8)
    store, model = LogitStore.open(str(tmp_path / "logits")), load_model(teacher[1])[0]
    ids = TokenStore.open(teacher[0]).read("train")
    for position in np.random.default_rng(0).choice(ids.size, 12, replace=False).tolist() + [0, ids.size - 1]:
        rows = store.read_rows("train", position, position + 1)
        for temperature in (1.0, 6.0):
            got_ids, got_logp, got_tail = rows.at_temperature(temperature)
            want_ids, want_logp, want_tail = reference_rows(model, ids, position, 16, stride, temperature, 8)
            assert got_ids[0].tolist() == want_ids.tolist()
            torch.testing.assert_close(got_logp[0].double(), want_logp, atol=3e-3, rtol=0)
            assert float(got_tail[0]) == pytest.approx(float(want_tail), abs=1e-5)


def test_k_equal_to_vocabulary_stores_the_full_softmax(teacher, tmp_path):
    vocab = TokenStore.open(teacher[0]).vocab_size
    dump_to(teacher, tmp_path / "full", top_k=vocab, split="val")
    store = LogitStore.open(str(tmp_path / "full"))
    ids, logp, tail = store.read_rows("val", 100, 140).at_temperature(6.0)
    assert ids.shape == (40, vocab) and float(tail.max()) < 1e-6
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(40), atol=2e-3, rtol=0)


class FailingWriter:
    """Lets two shards through, then fails the way a full disk does."""

    def __init__(self, real):
        self.real, self.calls = real, 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls > 2:
            raise OSError(28, "No space left on device")
        return self.real(*args)


def shard_bytes(location):
    root = Path(location)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("c/*")) + sorted(root.rglob("c/*/*"))
            if p.is_file()}


def test_disk_full_mid_dump_then_resume_is_byte_identical(teacher, tmp_path, monkeypatch):
    dump_to(teacher, tmp_path / "straight")
    real = LogitStoreWriter.write_shard
    failing = FailingWriter(lambda self, *a: real(self, *a))
    monkeypatch.setattr(LogitStoreWriter, "write_shard", lambda self, *a: failing(self, *a))
    result = CliRunner().invoke(main, ["dump-teacher", "--checkpoint", teacher[1], "--tokens", teacher[0], "--out",
                                       str(tmp_path / "cut"), "--shard-rows", "2048", "--chunk-rows", "512"])
    assert result.exit_code != 0 and "--resume" in result.output and "Traceback" not in result.output
    with pytest.raises(Exception, match="incomplete"):
        LogitStore.open(str(tmp_path / "cut"))
    monkeypatch.setattr(LogitStoreWriter, "write_shard", real)
    dump_to(teacher, tmp_path / "cut", resume=True)
    assert shard_bytes(tmp_path / "cut") == shard_bytes(tmp_path / "straight")
    assert len(shard_bytes(tmp_path / "straight")) > 4


@pytest.mark.slow
def test_two_ranks_write_the_same_store_as_one(teacher, tmp_path):
    dump_to(teacher, tmp_path / "one")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", "pipeline", "dump-teacher", "--checkpoint", teacher[1], "--tokens", teacher[0],
               "--out", str(tmp_path / "two"), "--shard-rows", "2048", "--chunk-rows", "512", "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert LogitStore.open(str(tmp_path / "two")).meta.stats["world_size"] == 2
    assert shard_bytes(tmp_path / "two") == shard_bytes(tmp_path / "one")


def test_memory_url_round_trip(teacher, tmp_path):
    dump_to(teacher, tmp_path / "local", split="val")
    dump_to(teacher, "memory://superstill-test/logits", split="val")
    local, remote = LogitStore.open(str(tmp_path / "local")), LogitStore.open("memory://superstill-test/logits")
    a, b = local.read_rows("val", 0, 700), remote.read_rows("val", 0, 700)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.scores, b.scores) and torch.equal(a.tail_mass, b.tail_mass)


def test_errors_are_one_line(teacher, tmp_path):
    runner = CliRunner()
    base = ["dump-teacher", "--checkpoint", teacher[1], "--tokens", teacher[0], "--shard-rows", "2048", "--chunk-rows", "512"]
    dump_to(teacher, tmp_path / "done", split="val")
    cases = [
        (["--out", str(tmp_path / "done")], "already exists"),
        (["--out", str(tmp_path / "a"), "--top-k", "100000"], "larger than the vocabulary"),
        (["--out", str(tmp_path / "b"), "--temperature", "0"], "must be a finite number > 0"),
        (["--out", str(tmp_path / "c"), "--resume"], "no logit store"),
    ]
    for extra, message in cases:
        result = runner.invoke(main, base + extra)
        assert result.exit_code != 0 and message in result.output, (extra, result.output)
        assert "Traceback" not in result.output
    other = micro_token_store(str(tmp_path / "other"), vocab_size=200)
    result = runner.invoke(main, ["dump-teacher", "--checkpoint", teacher[1], "--tokens", other, "--out", str(tmp_path / "d")])
    assert result.exit_code != 0 and "vocabulary" in result.output


def test_validate_recomputes_and_detects_corruption(teacher, tmp_path):
    dump_to(teacher, tmp_path / "logits", split="val")
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(tmp_path / "logits"), "--tokens", teacher[0], "--checkpoint", teacher[1],
                              "--sample", "8"])
    assert ok.exit_code == 0 and "8 positions recomputed" in ok.output, ok.output
    other = micro_token_store(str(tmp_path / "other"), n_chars=30_000)
    wrong = runner.invoke(main, ["validate", str(tmp_path / "logits"), "--tokens", other])
    assert wrong.exit_code != 0 and "fingerprint" in wrong.output
    shard = next(p for p in sorted((tmp_path / "logits" / "val" / "tail_mass").rglob("*")) if p.is_file() and p.name == "0")
    data = bytearray(shard.read_bytes())
    data[40] ^= 0xFF
    shard.write_bytes(bytes(data))
    bad = runner.invoke(main, ["validate", str(tmp_path / "logits"), "--tokens", teacher[0]])
    assert bad.exit_code != 0 and "CRC32C" in bad.output and "tail_mass" in bad.output
