"""Output safety as a mechanism: outputs apart from inputs, --force replaces only superstill's own outputs,
never the current directory; unwritable places fail before work; atomic writes leave nothing partial."""

import errno
import json
import os

import pytest

from pipeline.errors import UserError
from pipeline.storage import (EXPERIMENT, LOGITS, RUN, TOKENS, artifact_kind, atomic_write_bytes, check_apart,
                              check_creatable, check_replaceable, check_writable, exists)


@pytest.mark.parametrize("out, other, relation", [
    ("a", "a", "is"), ("a", "a/b", "contains"), ("a/b", "a", "lies inside"), ("a/./b/../b", "a/b", "is"),
    ("ab", "a", None), ("a", "b", None),
])
def test_output_must_lie_apart_from_inputs(tmp_path, out, other, relation):
    def check():
        check_apart(tmp_path / out, {"--tokens": str(tmp_path / other)})
    if relation is None:
        check()
    else:
        with pytest.raises(UserError, match=f"{relation} --tokens"):
            check()


def test_apart_sees_through_symlinks_and_urls(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UserError, match="is --checkpoint"):
        check_apart(tmp_path / "link", {"--checkpoint": tmp_path / "real"})
    with pytest.raises(UserError, match="lies inside --tokens"):
        check_apart("memory://bucket/tokens/out", [("--tokens", "memory://bucket/tokens")])
    check_apart("memory://bucket/out", [("--tokens", "memory://bucket/tokens"), ("--x", None)])
    check_apart(tmp_path / "x", [("--tokens", "memory://x")])  # another filesystem: apart


def test_artifacts_are_recognised_by_files_only_superstill_writes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"kind": "teacher", "tool_version": "0"}))
    store = tmp_path / "store"
    store.mkdir()
    (store / "zarr.json").write_text(json.dumps({"attributes": {"superstill": {"format": "superstill.logits"}}}))
    experiment = tmp_path / "exp"
    experiment.mkdir()
    (experiment / "experiment.json").write_text("{}")
    (experiment / "state.json").write_text("{}")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "run.json").write_text("not json")
    assert [artifact_kind(p) for p in (run, store, experiment, foreign, tmp_path)] == [RUN, LOGITS, EXPERIMENT, None, None]


def test_force_replaces_only_what_superstill_made(tmp_path, monkeypatch):
    mine = tmp_path / "store"
    mine.mkdir()
    (mine / "zarr.json").write_text(json.dumps({"attributes": {"superstill": {"format": "superstill.tokens"}}}))
    check_replaceable(mine, (TOKENS,))
    with pytest.raises(UserError, match="holds a token store, not a run"):
        check_replaceable(mine, (RUN,))
    theirs = tmp_path / "photos"
    theirs.mkdir()
    (theirs / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(UserError, match="was not made by superstill"):
        check_writable(theirs, force=True, kinds=(RUN,))
    monkeypatch.chdir(mine)
    with pytest.raises(UserError, match="current directory"):
        check_replaceable(mine, (TOKENS,))
    with pytest.raises(UserError, match="current directory"):
        check_replaceable(tmp_path, ())  # an ancestor of the current directory


def test_existing_output_needs_force_but_an_empty_directory_does_not(tmp_path):
    (tmp_path / "empty").mkdir()
    check_writable(tmp_path / "empty", force=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="already exists.*--force"):
        check_writable(tmp_path / "file", force=False)


def test_unwritable_or_impossible_places_fail_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a directory"):
        check_creatable(tmp_path / "file" / "out")
    # Tests run as root, for whom every directory is writable: stand in for a read-only one.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(tmp_path) else real_access(path, mode))
    with pytest.raises(UserError, match="is not writable"):
        check_writable(tmp_path / "new" / "deeper", force=False)


def test_an_unknown_url_scheme_or_missing_extra_is_one_line():
    with pytest.raises(UserError, match="use a local path or a URL fsspec knows"):
        exists("nosuchscheme://bucket/x")
    with pytest.raises(UserError, match="needs a package that is not installed .*gcsfs"):
        exists("gs://bucket/x")  # gcsfs is no dependency of superstill, in any extra


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_partial(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
