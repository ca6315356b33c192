"""`dump-teacher --part I/N`: parts written apart make the same store as one dump; mismatched parts are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.dump_parts import Part
from pipeline.errors import UserError
from pipeline.logit_store import LogitStore
from stages.train_teacher import TrainTeacherConfig, run as train_teacher
from tests.factories import overrides, tiny_teacher

SHARDS = ["--shard-rows", "512", "--chunk-rows", "128"]
# Root metadata that legitimately differs between two dumps of the same content: when the store was
# created, how long the finishing process took (its speed), and how the dump was split (`parts`).
RUN_SPECIFIC = {"created_at": None, "stats": ("dump_wall_time_s", "positions_per_s"), "provenance": ("parts",)}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny teacher trained for a few steps on ~3,300 tokens per split (7 shards of 512 rows each)."""
    root = tmp_path_factory.mktemp("parts")
    tokens, teacher = tiny_teacher(root)
    return {"tokens": tokens, "teacher": teacher, "root": root}


def dump(teacher, out, *extra, checkpoint=None):
    return CliRunner().invoke(main, ["dump-teacher", "--checkpoint", checkpoint or teacher["teacher"], "--tokens",
                                     teacher["tokens"], "--out", str(out), "--top-k", "8", *SHARDS, *map(str, extra)])


def local_objects(root: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file of a local store."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def comparable_meta(zarr_json: bytes) -> dict:
    """The root zarr.json with the RUN_SPECIFIC metadata removed."""
    document = json.loads(zarr_json)
    meta = document["attributes"]["superstill"]
    for key, inner in RUN_SPECIFIC.items():
        if inner is None:
            meta.pop(key, None)
        else:
            for name in inner:
                meta.get(key, {}).pop(name, None)
    return document


def same_store(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    """Two stores' objects are identical byte for byte, but for the root metadata's RUN_SPECIFIC fields."""
    assert sorted(a) == sorted(b)
    for key in a:
        if key == "zarr.json":
            assert comparable_meta(a[key]) == comparable_meta(b[key])
        else:
            assert a[key] == b[key], key


def test_two_parts_make_the_same_store_as_one_dump(teacher, tmp_path):
    assert dump(teacher, tmp_path / "whole").exit_code == 0
    first = dump(teacher, tmp_path / "parts", "--part", "2/2")  # any order: the second part to end finishes
    assert first.exit_code == 0 and "shards of other parts still missing" in first.output, first.output
    with pytest.raises(UserError, match="incomplete"):
        LogitStore.open(str(tmp_path / "parts"))
    assert not (tmp_path / "parts" / "README.md").exists()  # the card comes with completion, not before
    status = CliRunner().invoke(main, ["store", "status", str(tmp_path / "parts")])
    assert status.exit_code == 0 and "incomplete, 6 of 14 shards written (dump in 2 parts)" in status.output
    assert "missing 0 (part 1/2), 2 (part 1/2), 4 (part 1/2), 6 (part 1/2)" in status.output, status.output
    second = dump(teacher, tmp_path / "parts", "--part", "1/2")
    assert second.exit_code == 0 and "wrote" in second.output, second.output
    parts, whole = local_objects(tmp_path / "parts"), local_objects(tmp_path / "whole")
    same_store(parts, whole)
    assert "README.md" in parts and len(parts) > 40
    assert json.loads(parts["zarr.json"])["attributes"]["superstill"]["provenance"]["parts"] == 2
    again = dump(teacher, tmp_path / "parts", "--part", "2/2")  # a retried task of a finished job array
    assert again.exit_code == 0 and "the store is complete" in again.output, again.output
    assert local_objects(tmp_path / "parts") == parts


def test_every_shard_has_exactly_one_owner_among_parts_and_ranks():
    for parts in range(1, 5):
        for world in range(1, 4):
            for shard in range(40):
                owners = [(i, r) for i in range(1, parts + 1) for r in range(world)
                          if Part(i, parts).owns(shard, r, world)]
                assert len(owners) == 1, (parts, world, shard, owners)
                assert owners[0][0] == shard % parts + 1  # the part: the torchrun rule with N for the world
                if parts == 1:
                    assert owners[0][1] == shard % world  # a whole dump keeps torchrun's rank rule


@pytest.mark.parametrize("text, message", [("3/2", "between 1 and 2"), ("0/4", "between 1 and 4"),
                                           ("1/0", "between 1 and 1"), ("2", "expected I/N"), ("a/b", "expected I/N")])
def test_part_syntax_and_range(teacher, tmp_path, text, message):
    result = dump(teacher, tmp_path / "x", "--part", text)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "x").exists()


def test_parts_that_disagree_are_refused(teacher, tmp_path):
    out = tmp_path / "parts"
    assert dump(teacher, out, "--part", "1/2").exit_code == 0
    other_teacher = str(teacher["root"] / "other")
    train_teacher(TrainTeacherConfig(tokens=teacher["tokens"], out=other_teacher, preset="tiny-teacher",
                                     overrides=overrides(train={"epochs": 1, "max_steps_per_epoch": 2, "seed": 1})))
    cases = [(["--part", "2/2", "--top-k", "4"], "k: 8 != 4"),  # --top-k given twice: the last wins
             (["--part", "2/2", "--temperature", "2"], "temperatures"),
             (["--part", "2/3"], "being dumped in 2 part(s), not 3"),
             (["--part", "2/2", "--force"], "--force with --part")]
    for extra, message in cases:
        result = dump(teacher, out, *extra)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    result = dump(teacher, out, "--part", "2/2", checkpoint=other_teacher)
    assert result.exit_code == 2 and "teacher" in result.output and "other settings" in result.output, result.output
    status = CliRunner().invoke(main, ["store", "status", str(out)])
    assert "8 of 14 shards written" in status.output  # nothing was written by the refused parts
