"""`pipeline store slice`: a store cut from a bigger one equals a direct dump at the smaller k, row for row."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.logit_store import LogitStore
from pipeline.store_slicing import narrowed
from pipeline.teacher_rows import TeacherRows
from tests.factories import tiny_teacher

SHARDS = ["--shard-rows", "512", "--chunk-rows", "128"]
U32 = 2.0 ** -24  # unit roundoff of float32
U16 = 2.0 ** -11  # unit roundoff of float16 (the stored scores)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A trained tiny teacher dumped at k = 16 and, directly, at k = 8 (T = 1 and 6 both)."""
    root = tmp_path_factory.mktemp("slicing")
    tokens, _ = tiny_teacher(root)
    for k in (16, 8):
        result = invoke("dump-teacher", "--checkpoint", root / "teacher", "--tokens", tokens, "--out", root / f"k{k}",
                        "--top-k", k, *SHARDS)
        assert result.exit_code == 0, result.output
    return {"root": root, "tokens": tokens, "teacher": str(root / "teacher"), "k16": str(root / "k16"),
            "k8": str(root / "k8")}


def tolerances(sliced: TeacherRows, source: TeacherRows, direct: TeacherRows, j: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, how far the slice's (log-normalizer, tail) at column j may be from the direct dump's.

    Both dumps compute c_T = log(sum of V terms exp(s_i / T)) and the tail = (sum over the ids outside
    the top k) / (sum over all) in float32. A float32 sum of n positive terms, each exp within 2 ulp, is
    within (n + 1) u of the exact sum (u = 2^-24, the recursive-summation bound, any order), and the
    division adds u: relative error <= (V + 2) u = `rel`. So |dc| <= 2 rel + 2 u |c| (each log also
    rounds). The slice adds to the k = 16 tail each dropped id's exp(s~ / T - c~), where s~ is the float16
    score (|s~ - s| <= |s~| 2^-11 / (1 - 2^-11)) and c~ the stored c (|c~ - c| <= rel + u |c|): each term is
    off by a factor of at most exp(|s~| 2^-11 / (1 - 2^-11) / T + rel + u |c|). Plus rel on each stored tail
    and the final rounding to float32."""
    vocab, t = source.vocab_size, source.temperatures[j]
    rel = (vocab + 2) * U32
    c = source.log_normalizer[:, j].double()  # [n]
    c_tol = 2 * rel + 2 * U32 * c.abs()
    dropped_scores = source.scores[:, direct.k:].double()  # [n, 8] float16 scores of the dropped ids
    dropped = torch.exp(dropped_scores / t - c[:, None])  # [n, 8]
    factor = torch.exp(dropped_scores.abs() * U16 / (1 - U16) / t + rel + U32 * c.abs()[:, None]) - 1
    tail_tol = (dropped * factor).sum(-1) + rel * (source.tail_mass[:, j].double() + direct.tail_mass[:, j].double()) \
        + U32 * sliced.tail_mass[:, j].double()
    return c_tol, tail_tol


def test_slice_to_a_smaller_k_equals_a_direct_dump(stores, tmp_path):
    result = invoke("store", "slice", stores["k16"], "--out", tmp_path / "s8", "--top-k", 8)
    assert result.exit_code == 0, result.output
    sliced_store, source_store, direct_store = (LogitStore.open(p) for p in (tmp_path / "s8", stores["k16"], stores["k8"]))
    assert sliced_store.meta.positions == direct_store.meta.positions and sliced_store.meta.k == 8
    worst = {"c": 0.0, "tail": 0.0, "tail_share_of_tol": 0.0}
    for split, count in direct_store.meta.positions.items():
        sliced, source, direct = (s.read_rows(split, 0, count) for s in (sliced_store, source_store, direct_store))
        assert torch.equal(sliced.ids, direct.ids) and torch.equal(sliced.scores.view(torch.int16), direct.scores.view(torch.int16))
        assert torch.equal(sliced.log_normalizer, source.log_normalizer)  # copied: c_T does not depend on k
        for j in range(len(direct.temperatures)):
            c_tol, tail_tol = tolerances(sliced, source, direct, j)
            dc = (sliced.log_normalizer[:, j].double() - direct.log_normalizer[:, j].double()).abs()
            dtail = (sliced.tail_mass[:, j].double() - direct.tail_mass[:, j].double()).abs()
            assert bool((dc <= c_tol).all()) and bool((dtail <= tail_tol).all())
            worst = {"c": max(worst["c"], float(dc.max())), "tail": max(worst["tail"], float(dtail.max())),
                     "tail_share_of_tol": max(worst["tail_share_of_tol"], float((dtail / tail_tol).max()))}
            # the tail really grew by the dropped mass (> 10x the tolerance), so the test can fail
            assert float((sliced.tail_mass[:, j] - source.tail_mass[:, j]).min()) > 10 * float(tail_tol.max())
    print(f"largest |d c| {worst['c']:.2e}, |d tail| {worst['tail']:.2e} ({worst['tail_share_of_tol']:.0%} of its bound)")


def test_narrowed_moves_exactly_the_dropped_probability_into_the_tail():
    """A hand-made row in float64 terms: V = 10, k = 4 of them stored, sliced to k = 2."""
    logits = torch.tensor([[3.0, 2.5, 1.0, 0.5, 0.0, -1.0, -1.5, -2.0, -3.0, -4.0]], dtype=torch.float64)
    rows = []
    for t in (1.0, 4.0):
        p = torch.softmax(logits / t, dim=-1)
        rows.append((torch.logsumexp((logits - 3.0) / t, -1), p[:, 4:].sum(-1), p[:, 2:].sum(-1)))
    source = TeacherRows(torch.arange(4)[None], (logits[:, :4] - 3.0).half(), torch.stack([r[0] for r in rows], 1).float(),
                         torch.stack([r[1] for r in rows], 1).float(), (1.0, 4.0), 10)
    cut = narrowed(source, 2, [1])  # keep k = 2 and only T = 4
    assert cut.temperatures == (4.0,) and cut.k == 2 and cut.ids.tolist() == [[0, 1]]
    assert float(cut.log_normalizer[0, 0]) == float(source.log_normalizer[0, 1])
    assert math.isclose(float(cut.tail_mass[0, 0]), float(rows[1][2][0]), rel_tol=1e-6)  # the k = 2 tail at T = 4


def test_slice_keeps_stored_temperatures_and_splits_and_says_what_it_was_cut_from(stores, tmp_path):
    result = invoke("store", "slice", stores["k16"], "--out", tmp_path / "t6", "--temperature", 6, "--split", "val")
    assert result.exit_code == 0, result.output
    sliced, source = LogitStore.open(str(tmp_path / "t6")), LogitStore.open(stores["k16"])
    assert sliced.meta.temperatures == (6.0,) and list(sliced.meta.positions) == ["val"] and sliced.meta.k == 16
    a, b = sliced.read_rows("val", 0, 700), source.read_rows("val", 0, 700)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.log_normalizer[:, 0], b.log_normalizer[:, 1])
    assert torch.equal(a.tail_mass[:, 0], b.tail_mass[:, 1])  # no id dropped: the tail is the stored one
    origin = sliced.meta.provenance["sliced_from"]
    assert origin["k"] == 16 and origin["temperatures"] == [1.0, 6.0] and origin["location"] == stores["k16"]
    with open(f"{stores['k16']}/zarr.json", encoding="utf-8") as handle:
        stored = json.load(handle)
    want = hashlib.sha256(json.dumps(stored["attributes"]["superstill"], sort_keys=True).encode()).hexdigest()
    assert origin["meta_sha256"] == want
    assert sliced.meta.token_fingerprint == source.meta.token_fingerprint
    assert sliced.meta.teacher == source.meta.teacher
    card = (tmp_path / "t6" / "README.md").read_text()
    assert "## Cut from a larger store" in card and want in card and "top-16 at T = 1, 6" in card
    validated = invoke("validate", tmp_path / "t6", "--tokens", stores["tokens"], "--checkpoint", stores["teacher"],
                       "--sample", 8)
    assert validated.exit_code == 0, validated.output  # the slice is still this teacher's output


def test_slice_mistakes_are_one_line(stores, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    assert invoke("store", "slice", stores["k16"], "--out", tmp_path / "val", "--split", "val").exit_code == 0
    cases = [(["--top-k", 32], "stores the top 16 ids"), (["--top-k", 0], "--top-k 0"),
             (["--temperature", 3], "--temperature 3 is not stored"),
             (["--temperature", 6, "--temperature", 6], "duplicates"),
             (["--out", f"{stores['k16']}/inner"], "lies inside STORE"),
             (["--out", tmp_path / "notes", "--force"], "was not made by superstill"),
             (["--out", tmp_path / "val"], "already exists")]
    for extra, message in cases:
        out = [] if "--out" in extra else ["--out", tmp_path / "new"]
        result = invoke("store", "slice", stores["k16"], *out, *extra)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, (extra, result.output)
    only_val = invoke("store", "slice", tmp_path / "val", "--out", tmp_path / "new", "--split", "train")
    assert only_val.exit_code == 2 and "has no 'train' split" in only_val.output
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine" and not (tmp_path / "new").exists()
    replaced = invoke("store", "slice", stores["k16"], "--out", tmp_path / "val", "--top-k", 4, "--force")
    assert replaced.exit_code == 0 and LogitStore.open(str(tmp_path / "val")).meta.k == 4
