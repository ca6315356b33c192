"""Stores on object storage, end to end, against a real S3-compatible server on 127.0.0.1.

moto's standalone server (`superstill[s3]` installs it) runs in this process for the session; s3fs
reaches it through fsspec with the endpoint and credentials in the standard AWS environment variables,
as a user's would be. Each test works in its own bucket. Checked: tokenize -> train -> dump -> inspect ->
validate -> train-student -> report through s3:// URLs, with the secret key nowhere in what the tools
write or print; a dump killed midway resumes to the same objects as an uninterrupted one; the ways it
goes wrong (missing bucket, wrong credentials, unknown scheme, missing package) are one-line errors.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fsspec
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.logit_store import LogitStore
from tests.factories import FIXTURE_CORPUS, TINY_MODEL, TINY_TRAIN
from tests.test_dump_parts import same_store

SECRET = "superstill-test-secret-6f1c2b"  # must never appear in anything the tools write or print
KEY_ID = "superstill-test-key"
BOOKS = ("jonah.txt", "ruth.txt", "esther.txt")  # three short documents: one is held out at 0.3
SHARDS = ["--shard-rows", "1024", "--chunk-rows", "256"]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on a free loopback port for the whole session, stopped at the end."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_environment(endpoint: str, key_id: str = KEY_ID, secret: str = SECRET) -> dict[str, str]:
    """The AWS variables a user sets for an S3-compatible server; no profile or instance metadata is consulted."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true"}


def fresh_s3fs() -> None:
    """Forget cached S3 filesystems (fsspec keeps one per set of options; credentials are read at creation)."""
    import s3fs
    from zarr.core.sync import sync

    for instance in list(s3fs.S3FileSystem._cache.values()):  # close their HTTP sessions (no warnings at exit)
        if getattr(instance, "_s3", None) is None:
            continue
        if instance.asynchronous:  # zarr's: it lives on zarr's event loop
            sync(instance._s3.__aexit__(None, None, None))
        else:
            s3fs.S3FileSystem.close_session(instance.loop, instance._s3)
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def bucket(s3_endpoint, monkeypatch):
    """A new, empty bucket; the environment points s3:// at the local server."""
    for name, value in s3_environment(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    fresh_s3fs()
    name = f"superstill-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3").mkdir(name)
    yield name
    fresh_s3fs()


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def ok(*args) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, (args, result.output)
    return result.output


def objects(url: str) -> dict[str, bytes]:
    """{key below url: bytes} of every object under an s3:// prefix."""
    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return {name[len(root) + 1:]: fs.cat_file(name) for name in fs.find(root)}


def tiny_config(path: Path) -> str:
    """A TOML file with the tiny model and training settings (`--config`)."""
    def table(name, values):
        return f"[{name}]\n" + "".join(f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}\n"
                                       for k, v in values.items())
    path.write_text(table("model", TINY_MODEL) + table("train", {**TINY_TRAIN, "max_steps_per_epoch": 12}))
    return str(path)


def test_round_trip_through_s3_never_records_the_secret(bucket, tmp_path):
    s3 = f"s3://{bucket}"
    config = tiny_config(tmp_path / "tiny.toml")
    run = tmp_path / "run"
    printed = [
        ok("tokenize", *(FIXTURE_CORPUS / b for b in BOOKS), "--out", f"{s3}/tokens", "--vocab-size", 400,
           "--val-fraction", 0.3, "--workers", 1),
        ok("train-teacher", "--tokens", f"{s3}/tokens", "--out", run / "teacher", "--preset", "tiny-teacher",
           "--config", config, "--epochs", 1),
        ok("dump-teacher", "--checkpoint", run / "teacher", "--tokens", f"{s3}/tokens", "--out", f"{s3}/logits",
           "--top-k", 16, *SHARDS),
        ok("inspect", f"{s3}/logits"),
        ok("validate", f"{s3}/logits", "--tokens", f"{s3}/tokens", "--checkpoint", run / "teacher", "--sample", 8),
        ok("store", "status", f"{s3}/logits"),
        ok("train-student", "--tokens", f"{s3}/tokens", "--teacher-logits", f"{s3}/logits", "--out",
           run / "students" / "superstilled", "--preset", "tiny-student", "--config", config, "--epochs", 1,
           "--temperature", 1),
        ok("report", run),
    ]
    inspected = printed[3]
    assert "complete" in inspected and "CRC32C OK" in inspected and "--- store card" in inspected
    assert "held-out perplexity" in inspected and "3 files" in inspected  # the card, with the corpus summary
    assert "positions recomputed" in printed[4] and "complete, " in printed[5]
    student = json.loads((run / "students" / "superstilled" / "run.json").read_text())
    assert student["superstill"]["teacher_logits"] == f"{s3}/logits"
    report = (run / "report.md").read_text()
    assert "No teacher logit store found" not in report and f"{s3}/logits" in report  # the report read it from S3
    store = LogitStore.open(f"{s3}/logits")
    assert store.meta.k == 16 and store.meta.tokens == f"{s3}/tokens"
    written = [path.read_bytes() for path in run.rglob("*") if path.is_file()]
    written += list(objects(s3).values())
    assert written and not any(SECRET.encode() in data for data in written)
    assert not any(SECRET in text for text in printed)


def dump_command(checkpoint, tokens, out, *extra) -> list[str]:
    return [sys.executable, "-m", "pipeline", "dump-teacher", "--checkpoint", str(checkpoint), "--tokens", tokens,
            "--out", out, "--top-k", "8", "--device", "cpu", *SHARDS, *extra]


# Run in a child process: each shard write takes an extra 0.3 s, so the test can kill it between writes.
SLOW_WRITES = ("import sys, time\n"
               "from pipeline.logit_store import LogitStoreWriter\n"
               "real = LogitStoreWriter.write_shard\n"
               "def slow(self, *args):\n"
               "    real(self, *args)\n"
               "    time.sleep(0.3)\n"
               "LogitStoreWriter.write_shard = slow\n"
               "from pipeline.cli import main\n"
               "main(sys.argv[1:], prog_name='pipeline')\n")


def test_a_dump_killed_midway_resumes_to_the_same_objects(bucket, tmp_path, s3_endpoint):
    s3 = f"s3://{bucket}"
    ok("tokenize", *(FIXTURE_CORPUS / b for b in BOOKS), "--out", f"{s3}/tokens", "--vocab-size", 400,
       "--val-fraction", 0.3, "--workers", 1)
    teacher = random_teacher(tmp_path / "teacher.pt", f"{s3}/tokens")
    ok(*dump_command(teacher, f"{s3}/tokens", f"{s3}/straight")[3:])
    env = {**os.environ, **s3_environment(s3_endpoint), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", SLOW_WRITES, *dump_command(teacher, f"{s3}/tokens", f"{s3}/cut")[3:]],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        fs = fsspec.filesystem("s3")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:  # until the first shard is marked written
            fs.invalidate_cache()
            if fs.find(f"{bucket}/cut/train/shard_complete/c"):
                break
            time.sleep(0.05)
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert SECRET.encode() not in child.stderr.read()  # its log lines
    refused = invoke("train-student", "--tokens", f"{s3}/tokens", "--teacher-logits", f"{s3}/cut", "--out",
                     tmp_path / "student", "--preset", "tiny-student")
    assert refused.exit_code == 2 and "incomplete" in refused.output and "--resume" in refused.output
    status = ok("store", "status", f"{s3}/cut")
    assert "incomplete" in status and "missing" in status
    ok(*dump_command(teacher, f"{s3}/tokens", f"{s3}/cut", "--resume")[3:])
    cut, straight = objects(f"{s3}/cut"), objects(f"{s3}/straight")
    assert sorted(cut) == sorted(straight) and len(cut) > 20
    same_store(cut, straight)


def random_teacher(path: Path, tokens: str) -> Path:
    """An untrained tiny teacher for these tokens (the dump's bytes, not its quality, are compared)."""
    import torch

    from pipeline.checkpoint import save
    from pipeline.config import ModelConfig, TrainConfig
    from pipeline.model import GPT
    from pipeline.token_store import TokenStore

    torch.manual_seed(0)
    model_config = ModelConfig(**{**TINY_MODEL, "vocab_size": TokenStore.open(tokens).vocab_size})
    save(path, model=GPT(model_config), optimizer=None, scheduler=None, model_config=model_config,
         train_config=TrainConfig(), run={}, position={})
    return path


def test_object_storage_mistakes_are_one_line_without_secrets(bucket, tmp_path, s3_endpoint, monkeypatch):
    s3 = f"s3://{bucket}"
    ok("tokenize", FIXTURE_CORPUS / "jonah.txt", FIXTURE_CORPUS / "ruth.txt", "--out", f"{s3}/tokens",
       "--vocab-size", 300, "--val-fraction", 0, "--workers", 1)
    teacher = random_teacher(tmp_path / "teacher.pt", f"{s3}/tokens")
    dump = ["dump-teacher", "--checkpoint", teacher, "--tokens", f"{s3}/tokens", "--top-k", 8, *SHARDS]
    missing_bucket = invoke(*dump, "--out", "s3://no-such-bucket-here/logits")
    assert missing_bucket.exit_code == 2 and "bucket 'no-such-bucket-here' does not exist" in missing_bucket.output
    unknown = invoke(*dump, "--out", "nosuchscheme://bucket/logits")
    assert unknown.exit_code == 2 and "nosuchscheme" in unknown.output
    results = [missing_bucket, unknown]

    from moto.core.authorization import enable_iam_authentication  # the server now checks credentials

    with enable_iam_authentication():
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET + "-wrong")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        fresh_s3fs()
        for args in ([*dump, "--out", f"{s3}/logits"], ["inspect", f"{s3}/tokens"]):
            denied = invoke(*args)
            assert denied.exit_code == 2 and "access denied" in denied.output, denied.output
            assert "AWS_SECRET_ACCESS_KEY" in denied.output  # names the variable to check, never its value
            results.append(denied)
    fresh_s3fs()

    with monkeypatch.context() as patch:  # as if s3fs were not installed
        patch.delitem(importlib.import_module("fsspec.registry")._registry, "s3", raising=False)
        patch.setitem(sys.modules, "s3fs", None)
        no_package = invoke("inspect", f"{s3}/tokens")
    assert no_package.exit_code == 2 and "`s3` extra" in no_package.output
    results.append(no_package)
    for result in results:
        lines = [line for line in result.output.strip().splitlines() if line.startswith("Error:")]
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        assert SECRET not in result.output
