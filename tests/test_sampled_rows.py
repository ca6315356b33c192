"""Sampled teacher rows: unbiased targets, the fused loss against them, the store, the dump, validate, inspect."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.dumping import compute_rows
from pipeline.checkpoint import load_model
from pipeline.errors import UserError
from pipeline.logit_store import LogitStore, LogitStoreMeta, LogitStoreWriter
from pipeline.losses import superstill_loss
from pipeline.sampled_rows import SampledRows, draw_uniforms, row_maker, sample_rows_from_logits
from pipeline.teacher_windows import windows_for
from pipeline.token_store import TokenStore
from tests.test_dump_teacher import FailingWriter, dump_to, shard_bytes, teacher  # noqa: F401 (a fixture)
from tests.test_losses import forbid_host_reads

SAMPLED = {"rows": "sampled", "samples": 20}


def sampled(logits: torch.Tensor, samples: int, temperature: float = 1.0, seed: int = 0, first: int = 0) -> SampledRows:
    return sample_rows_from_logits(logits, np.arange(first, first + len(logits)), "train", samples, temperature, seed)


def empirical(rows: SampledRows) -> torch.Tensor:
    """count / N as a dense [n, V] float64 distribution."""
    dense = torch.zeros(len(rows), rows.vocab_size, dtype=torch.float64)
    return dense.scatter_add_(1, rows.ids, rows.counts.double()) / rows.samples


# ---- the target is unbiased -----------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_expected_target_is_the_teacher_softmax(temperature):
    """Mean of count / N over M positions with the same logits -> softmax(z / T_s), entry by entry within
    5 standard deviations sqrt(p (1 - p) / (N M)) (a fixed seed, so the test is deterministic)."""
    gen = torch.Generator().manual_seed(0)
    vocab, samples, repeats = 40, 12, 3000
    z = torch.randn(3, vocab, generator=gen) * 2.5  # three different teachers
    rows = sampled(z.repeat_interleave(repeats, 0), samples, temperature, seed=11)
    mean = empirical(rows).view(3, repeats, vocab).mean(1)  # [3, V]
    p = torch.softmax(z.double() / temperature, dim=-1)
    sigma = (p * (1 - p) / (samples * repeats)).sqrt()
    assert ((mean - p).abs() <= 5 * sigma + 1e-12).all(), float(((mean - p).abs() / sigma).max())
    assert torch.allclose(empirical(rows).sum(1), torch.ones(len(rows), dtype=torch.float64))


def test_draws_depend_only_on_seed_split_position_and_logits():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(64, 30, generator=gen) * 2
    whole = sampled(z, 16)
    order = torch.randperm(64, generator=gen)  # another batch composition: shuffled, in pieces
    pieces = [sample_rows_from_logits(z[order[i:i + 7]], order[i:i + 7].numpy(), "train", 16, 1.0, 0)
              for i in range(0, 64, 7)]
    shuffled = SampledRows.cat(pieces)
    back = torch.argsort(order)
    assert torch.equal(shuffled.ids[back], whole.ids) and torch.equal(shuffled.counts[back], whole.counts)
    for other in (sampled(z, 16, seed=1), sampled(z, 16, first=1),
                  sample_rows_from_logits(z, np.arange(64), "val", 16, 1.0, 0)):
        assert not torch.equal(other.counts, whole.counts)
    u = draw_uniforms(0, "train", np.arange(5000), 8)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / u.size)


def test_rows_hold_distinct_ascending_ids_and_counts_summing_to_n():
    rows = sampled(torch.randn(50, 300) * 3, 40)
    real = rows.counts > 0
    assert (rows.counts.sum(1) == 40).all() and rows.ids.shape == (50, 40)
    assert ((rows.ids[:, 1:] > rows.ids[:, :-1]) | ~real[:, 1:]).all()  # ascending where drawn
    assert not (real[:, 1:] & ~real[:, :-1]).any()  # padding only at the end
    assert not any(rows.problems().values())
    for row, drawn in zip(rows.ids.tolist(), real.tolist()):  # padding: distinct ids not drawn in the row
        assert len(set(row)) == len(row) and not set(r for r, d in zip(row, drawn) if not d) & set(
            r for r, d in zip(row, drawn) if d)
    assert torch.equal(rows.draws(), torch.sort(rows.draws(), dim=1).values)


def test_an_id_of_probability_zero_is_never_drawn():
    z = torch.full((4, 10), -math.inf)
    z[:, 3], z[:, 7] = 0.0, 1.0
    rows = sample_rows_from_logits(torch.where(torch.isinf(z), -1e30, z), np.arange(4), "train", 30, 1.0, 0)
    assert set(rows.ids[rows.counts > 0].tolist()) == {3, 7}


# ---- the loss ---------------------------------------------------------------------------------------------

def dense_sampled_loss(logits, targets, rows: SampledRows, temperature, w_teacher=0.6, w_data=0.4):
    """Plain reference: w1 T^2 CE(count / N, softmax(z / T)) + w2 CE(target), mean over rows, autograd."""
    z = logits.detach().double().requires_grad_()
    l_t = -(empirical(rows) * F.log_softmax(z / temperature, 1)).sum(1).mean()
    l_d = F.cross_entropy(z, targets)
    loss = w_teacher * temperature ** 2 * l_t + w_data * l_d
    loss.backward()
    return loss.detach(), z.grad


@pytest.mark.parametrize("vocab,samples,tail", [(60, 25, "bucket"), (60, 25, "renorm"), (8, 200, "bucket")])
def test_fused_loss_is_cross_entropy_against_the_empirical_distribution(vocab, samples, tail):
    """Padding (count 0, distinct unused ids) adds nothing; with N > V (vocab 8) rows may hold every id."""
    gen = torch.Generator().manual_seed(2)
    rows = sampled(torch.randn(33, vocab, generator=gen) * 2, samples)
    logits, targets = torch.randn(33, vocab, generator=gen) * 2, torch.randint(0, vocab, (33,), generator=gen)
    ids, logp, tail_mass = rows.at_temperature(1.0)
    assert all(len(set(row)) == len(row) for row in ids.tolist())  # the loss's contract: a set per row
    x = logits.clone().requires_grad_()
    out = superstill_loss(x, targets, ids, logp, tail_mass, temperature=1.0, tail=tail, chunk_rows=8)
    out.loss.backward()
    want, want_grad = dense_sampled_loss(logits, targets, rows, 1.0)
    assert float(out.loss.detach()) == pytest.approx(float(want), rel=1e-5)
    torch.testing.assert_close(x.grad.double(), want_grad, atol=2e-6, rtol=1e-4)


def test_with_many_draws_loss_and_gradient_approach_full_distillation():
    """N = 20,000: the teacher term and its gradient are within 5 standard deviations of full-vocabulary
    distillation's, the deviations derived from the multinomial variance (not tuned)."""
    gen = torch.Generator().manual_seed(3)
    n, vocab, samples, temperature, w1 = 6, 50, 20_000, 2.0, 0.6
    teacher = torch.randn(n, vocab, generator=gen) * 3
    logits, targets = torch.randn(n, vocab, generator=gen) * 2, torch.randint(0, vocab, (n,), generator=gen)
    rows = sampled(teacher, samples, temperature)
    p = torch.softmax(teacher.double() / temperature, 1)
    full_ids, full_logp = torch.arange(vocab).expand(n, vocab), torch.log(p).float()
    runs = []
    for ids, logp in (rows.at_temperature(temperature)[:2], (full_ids, full_logp)):
        x = logits.clone().requires_grad_()
        out = superstill_loss(x, targets, ids, logp, torch.zeros(n), temperature=temperature, w_teacher=w1)
        out.loss.backward()
        runs.append((out.teacher_term.double(), x.grad.double()))
    (l_sampled, g_sampled), (l_full, g_full) = runs
    # dL/dz_j = (w1 T / n)(q_j - target_j) + data term: the difference is (w1 T / n)(p_j - count_j / N).
    sigma_grad = w1 * temperature / n * (p * (1 - p) / samples).sqrt()
    assert ((g_sampled - g_full).abs() <= 5 * sigma_grad + 1e-6).all()
    # l_t = -(1/n) sum_rows sum_j target_j log q_j; each row's estimate has variance Var_p(log q) / N.
    log_q = F.log_softmax(logits.double() / temperature, 1)
    var = ((p * log_q ** 2).sum(1) - (p * log_q).sum(1) ** 2) / samples
    assert abs(float(l_sampled - l_full)) <= 5 * float(var.sum().sqrt()) / n + 1e-5


def test_other_temperatures_are_refused_in_one_line():
    rows = sampled(torch.randn(4, 20), 10, temperature=1.0)
    with pytest.raises(UserError, match=r"^--temperature 6: .*sampled at T = 1.*train at temperature 1") as error:
        rows.at_temperature(6.0)
    assert "\n" not in str(error.value)


def test_loss_inputs_need_no_device_sync(monkeypatch):
    """Rows moved to an accelerator are trimmed on the CPU side first; there, building the loss's inputs and
    the loss itself read nothing back to the host (the fused loss's rule)."""
    rows = sampled(torch.randn(12, 40) * 2, 16)
    assert rows.to("meta").ids.shape[1] == int(rows.distinct().max()) < 16  # trimmed before leaving the CPU
    assert rows.to("cpu").ids.shape[1] == 16  # staying on the CPU: unchanged (at_temperature trims there)
    trimmed, logits = rows.trimmed(), torch.randn(12, 40, requires_grad=True)
    with forbid_host_reads(monkeypatch):
        ids, logp, tail = trimmed.loss_targets()
        out = superstill_loss(logits, torch.zeros(12, dtype=torch.int64), ids, logp, tail, temperature=1.0)
        out.loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert all(torch.equal(a, b) for a, b in zip(rows.at_temperature(1.0), (ids, logp, tail)))


# ---- the store ---------------------------------------------------------------------------------------------

def sampled_meta(vocab: int, positions: dict, samples: int = 20, **extra) -> LogitStoreMeta:
    return LogitStoreMeta(token_fingerprint="0" * 64, vocab_size=vocab, k=samples, positions=positions, context=8,
                          stride=8, teacher={"checkpoint_sha256": "0" * 64, "model": {}}, temperatures=(1.0,),
                          shard_rows=16, chunk_rows=8, rows="sampled", samples=samples, **extra)


def write_sampled_store(location: str, logits: dict[str, torch.Tensor], samples: int = 20, seed: int = 0) -> dict:
    vocab = next(iter(logits.values())).shape[1]
    writer = LogitStoreWriter.create(location, sampled_meta(vocab, {s: len(z) for s, z in logits.items()}, samples,
                                                            sample_seed=seed))
    rows = {split: sample_rows_from_logits(z, np.arange(len(z)), split, samples, 1.0, seed)
            for split, z in logits.items()}
    for split, r in rows.items():
        for shard in range(writer.meta.n_shards(split)):
            writer.write_shard(split, shard, r[slice(*writer.shard_range(split, shard))])
    writer.finish()
    return rows


def test_store_round_trip_with_partial_last_shard_and_stats(tmp_path):
    gen = torch.Generator().manual_seed(4)
    logits = {"train": torch.randn(37, 300, generator=gen) * 3, "val": torch.randn(5, 300, generator=gen) * 3}
    rows = write_sampled_store(str(tmp_path / "s"), logits)
    store = LogitStore.open(str(tmp_path / "s"))
    meta = store.meta
    assert (meta.version, meta.rows, meta.k, meta.samples) == (2, "sampled", 20, 20)
    assert meta.dtypes == {"draw_deltas": "uint16", "shard_complete": "uint8"}
    for split, want in rows.items():
        for start, stop in ((0, len(want)), (3, min(21, len(want))), (len(want) - 1, len(want))):
            got = store.read_rows(split, start, stop)
            assert torch.equal(got.ids, want.ids[start:stop]) and torch.equal(got.counts, want.counts[start:stop])
        distinct = want.distinct().double()
        assert meta.stats["distinct_ids"][split] == {"mean": pytest.approx(float(distinct.mean())),
                                                     "max": int(distinct.max())}
    assert store.verify() == []
    assert "sampled: 20 draws per position" in store.summary() and "distinct ids" in store.summary()


def test_verify_names_impossible_draws(tmp_path):
    write_sampled_store(str(tmp_path / "s"), {"train": torch.randn(16, 300)})
    array = zarr.open_array(str(tmp_path / "s" / "train" / "draw_deltas"), mode="r+")
    deltas = array[0:16]
    deltas[3, 5] = 299  # the cumulative sum now runs past V - 1
    array[0:16] = deltas
    assert LogitStore.open(str(tmp_path / "s")).verify() == ["train shard 0 (rows 0-15): ids outside the vocabulary"]


def test_a_version_1_top_k_store_still_reads(tmp_path):
    """A store written before row kinds existed: version 1, no rows/samples/sample_seed keys."""
    from tests.test_store_spec_reader import make_store

    logits = np.random.default_rng(0).standard_normal((9, 50)).astype(np.float32)
    make_store(str(tmp_path / "old"), {"train": logits}, 6)
    root = tmp_path / "old" / "zarr.json"
    data = json.loads(root.read_text())
    for key in ("rows", "samples", "sample_seed"):
        del data["attributes"]["superstill"][key]
    assert data["attributes"]["superstill"]["version"] == 1
    root.write_text(json.dumps(data))
    store = LogitStore.open(str(tmp_path / "old"))
    assert store.meta.rows == "topk" and store.read_rows("train", 0, 9).k == 6


# ---- the dump, validate and inspect on a real tiny teacher --------------------------------------------------

def test_dump_stores_the_teachers_draws_and_validate_recomputes_them(teacher, tmp_path):
    dump_to(teacher, tmp_path / "s", split="val", **SAMPLED)
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(tmp_path / "s"), "--tokens", teacher[0], "--checkpoint", teacher[1],
                              "--sample", "12"])
    assert ok.exit_code == 0 and "12 positions recomputed: largest distance of a draw" in ok.output, ok.output
    shown = runner.invoke(main, ["inspect", str(tmp_path / "s")])
    assert shown.exit_code == 0 and "sampled: 20 draws per position" in shown.output
    assert "distinct ids  val" in shown.output
    # Other draws of the same teacher (the metadata claims seed 1): validate finds them.
    root = tmp_path / "s" / "zarr.json"
    data = json.loads(root.read_text())
    data["attributes"]["superstill"]["sample_seed"] = 1
    root.write_text(json.dumps(data))
    bad = runner.invoke(main, ["validate", str(tmp_path / "s"), "--tokens", teacher[0], "--checkpoint", teacher[1],
                               "--sample", "12"])
    assert bad.exit_code != 0 and "not the teacher's at seed 1" in bad.output


def test_resume_and_shards_in_another_order_give_identical_bytes(teacher, tmp_path, monkeypatch):
    options = {**SAMPLED, "split": "val"}  # 5 shards of 2,048 rows
    dump_to(teacher, tmp_path / "straight", **options)
    real = LogitStoreWriter.write_shard
    failing = FailingWriter(lambda self, *a: real(self, *a))
    monkeypatch.setattr(LogitStoreWriter, "write_shard", lambda self, *a: failing(self, *a))
    with pytest.raises(UserError, match="--resume"):
        dump_to(teacher, tmp_path / "cut", **options)
    monkeypatch.setattr(LogitStoreWriter, "write_shard", real)
    dump_to(teacher, tmp_path / "cut", resume=True, **options)
    assert shard_bytes(tmp_path / "cut") == shard_bytes(tmp_path / "straight")
    # As another rank would: every shard computed separately, last shard first, into a store of the same meta.
    meta = LogitStore.open(str(tmp_path / "straight")).meta
    writer, model = LogitStoreWriter.create(str(tmp_path / "reversed"), meta), load_model(teacher[1])[0].eval()
    tokens = TokenStore.open(teacher[0])
    for split in reversed(meta.splits):
        ids = tokens.read(split)
        for shard in reversed(range(meta.n_shards(split))):
            lo, hi = writer.shard_range(split, shard)
            rows = compute_rows(model, ids, windows_for(lo, hi, meta.context, meta.stride, ids.size),
                                row_maker(meta, split), 32, torch.device("cpu"), None)
            writer.write_shard(split, shard, rows)
    assert shard_bytes(tmp_path / "reversed") == shard_bytes(tmp_path / "straight")
    assert len(shard_bytes(tmp_path / "straight")) > 4


def test_sampled_options_are_checked_in_one_line(teacher, tmp_path):
    runner = CliRunner()
    base = ["dump-teacher", "--checkpoint", teacher[1], "--tokens", teacher[0], "--out", str(tmp_path / "x")]
    for extra, message in [(["--rows", "sampled", "--top-k", "8"], "--top-k 8 applies to topk rows only"),
                           (["--samples", "30"], "--samples 30 applies to sampled rows only"),
                           (["--rows", "sampled", "--samples", "0"], "--samples must be between 1 and 65535"),
                           (["--rows", "sampled", "--sample-temperature", "0"],
                            "--sample-temperature must be a finite")]:
        result = runner.invoke(main, base + extra)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    dump_to(teacher, tmp_path / "s", split="train", **SAMPLED)
    result = runner.invoke(main, ["train-student", "--tokens", teacher[0], "--teacher-logits", str(tmp_path / "s"),
                                  "--preset", "tiny-student", "--temperature", "6", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--temperature 6: the teacher rows were sampled at T = 1" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_experiment_refuses_a_variant_at_another_temperature():
    from pipeline.experiment_config import ExperimentConfig, load_experiment

    data = {"name": "x", "corpus": ["c.txt"], "teacher": {"preset": "tiny-teacher", "epochs": 1},
            "student": {"preset": "tiny-student", "epochs": 1}, "dump": {"rows": "sampled", "sample_temperature": 2.0},
            "variants": [{"name": "ok", "temperature": 2.0}, {"name": "hot", "temperature": 6.0}]}
    with pytest.raises(UserError, match=r"x.toml \[\[variants\]\] hot temperature 6: .*sampled at T = 2"):
        ExperimentConfig.from_dict(data, "x.toml")
    data["variants"].pop()
    assert ExperimentConfig.from_dict(data, "x.toml").dump.samples == 50
    shipped = load_experiment("demo-sampled")
    assert (shipped.dump.rows, shipped.dump.samples, [v.distillation.temperature for v in shipped.variants]) == \
           ("sampled", 50, [shipped.dump.sample_temperature])


def test_report_describes_a_sampled_store(tmp_path):
    from types import SimpleNamespace

    from pipeline.report_costs import _store_table

    write_sampled_store(str(tmp_path / "s"), {"train": torch.randn(16, 300)})
    meta = LogitStore.open(str(tmp_path / "s")).meta.to_dict()
    table = _store_table(SimpleNamespace(store=meta, store_path=tmp_path / "s"))
    assert "| rows | sampled: 20 draws per position |" in table and "mean distinct ids per position" in table
    assert "top-k" not in table
