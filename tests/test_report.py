"""`pipeline report` on tiny fake experiment directories written by these tests (real files, real zarr).

Expected numbers are recomputed here independently: n_b by numpy's interp on the (monotone) baseline
curve inverted in log-perplexity, costs from the formulas stated in the report.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.errors import UserError
from pipeline.logit_store import LogitStoreMeta, LogitStoreWriter
from pipeline.report import build_report, render_report
from pipeline.report_runs import load_experiment
from pipeline.teacher_rows import TeacherRows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEACHER_PARAMS, STUDENT_PARAMS = 1000, 4000
POSITIONS = {"train": 5000, "val": 500}
B_TOKENS = [1000, 2000, 3000, 4000]
B_VAL, B_TRAIN = [150.0, 60.0, 25.0, 12.0], [140.0, 55.0, 22.0, 11.0]
S_TOKENS = [1000, 2000, 3000]
S_VAL, S_TRAIN = [100.0, 30.0, 10.0], [90.0, 22.0, 9.0]  # train epoch 2 hits the baseline's epoch 3 exactly


def epoch_event(epoch, tokens, wall, train, val, superstill=False):
    return {"event": "epoch", "epoch": epoch, "step": epoch * 10, "tokens_seen": tokens, "wall_time_s": wall,
            "train_ppl": train, "train_nll": math.log(train), "val_ppl": val, "val_nll": math.log(val),
            "loss": 1.0, "loss_teacher": 0.5 if superstill else None, "loss_data": 1.0,
            "tokens_per_s": tokens / wall, "lr": 1e-3, "superstill": superstill}


def write_run(directory: Path, kind, name, params, events, superstill=None, planned=4):
    directory.mkdir(parents=True, exist_ok=True)
    info = {"kind": kind, "name": name, "model": {"n_layer": 2, "d_model": 64, "vocab_size": 100, "context": 32},
            "train": {"epochs": planned, "batch_size": 8, "lr": 1e-3}, "superstill": superstill,
            "parameters": params, "tool_version": "0.1.0"}
    (directory / "run.json").write_text(json.dumps(info))
    lines = [json.dumps({"event": "step", "step": 1, "loss": 3.0})] + [json.dumps(e) for e in events]
    (directory / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def write_store(path: Path, vocab=50, k=8):
    """A real (tiny, made-up) logit store whose stats the report reads; the stats given win over measured ones."""
    meta = LogitStoreMeta(token_fingerprint="f" * 64, vocab_size=vocab, k=k, positions=POSITIONS, context=16,
                          stride=16, teacher={"checkpoint_sha256": "0" * 64}, temperatures=(2.0,), shard_rows=4096,
                          chunk_rows=1024)
    writer = LogitStoreWriter.create(str(path), meta)
    for split, count in POSITIONS.items():
        for shard in range(writer.meta.n_shards(split)):
            lo, hi = writer.shard_range(split, shard)
            n = hi - lo
            ids = np.tile(np.arange(k), (n, 1))
            scores = -np.tile(np.arange(k, dtype=np.float16), (n, 1))
            rows = TeacherRows.from_numpy(ids, scores, np.ones((n, 1)), np.full((n, 1), 0.1), (2.0,), vocab)
            writer.write_shard(split, shard, rows)
    writer.finish({"dump_wall_time_s": 12.5, "bytes_per_position": 24, "stored_bytes": 3 * 2 ** 20,
                   "topk_mass": {"train": {"2": {"mean": 0.9, "min": 0.25}}}})


@pytest.fixture
def finished_run(tmp_path):
    run = tmp_path / "exp"
    write_run(run / "teacher", "teacher", "teacher", TEACHER_PARAMS,
              [epoch_event(i + 1, 100 * (i + 1), 10.0 * (i + 1), 400.0 - 50 * i, 450.0 - 50 * i) for i in range(3)])
    baseline = [epoch_event(i + 1, B_TOKENS[i], 100.0 * (i + 1), B_TRAIN[i], B_VAL[i]) for i in range(4)]
    # A resumed run re-logged epoch 2: the earlier (bogus) line must lose to the later one.
    baseline.insert(1, epoch_event(2, 2000, 999.0, 999.0, 999.0))
    write_run(run / "students" / "baseline", "baseline", "baseline", STUDENT_PARAMS, baseline)
    superstill = {"temperature": 2.0, "w_teacher": 0.5, "w_data": 0.5, "tail": "bucket", "transition_epoch": 2,
                  "teacher_logits": str(run / "teacher-logits")}
    write_run(run / "students" / "student", "student", "student", STUDENT_PARAMS,
              [epoch_event(i + 1, S_TOKENS[i], 110.0 * (i + 1), S_TRAIN[i], S_VAL[i], superstill=i < 2)
               for i in range(3)], superstill)
    (run / "experiment.json").write_text(json.dumps({"name": "fake", "students": [{"name": "baseline"},
                                                                                 {"name": "student"}]}))
    write_store(run / "teacher-logits")
    return run


def report_text(run: Path) -> str:
    """The markdown alone (figures are slow to draw; their own tests build them)."""
    return render_report(load_experiment(str(run)), [])


def reference_tokens(baseline_ppl, target):
    """n_b on a falling baseline: invert log-ppl -> tokens with numpy (x must increase, so reverse)."""
    return float(np.interp(math.log(target), np.log(baseline_ppl[::-1]), B_TOKENS[::-1]))


def test_final_perplexity_table(finished_run):
    text = report_text(finished_run)
    # Student's last epoch is 3: divide by the baseline at epoch 3.
    assert (f"| student | student | 4,000 | 3 | 3,000 | {S_TRAIN[2]:.2f} | {S_VAL[2]:.2f} | "
            f"{S_TRAIN[2] / B_TRAIN[2]:.3f}× | {S_VAL[2] / B_VAL[2]:.3f}× |") in text
    assert f"| baseline | baseline | 4,000 | 4 | 4,000 | {B_TRAIN[3]:.2f} | {B_VAL[3]:.2f} | — | — |" in text
    assert "| student | student | 4,000 | 2 | 64 | 32 | 3 / 4 |" in text
    assert "999" not in text  # the overwritten epoch-2 line of the resumed baseline


def test_sample_complexity_tables(finished_run):
    text = report_text(finished_run)
    held_out = text.split("held-out perplexity")[1].split("###")[0]
    for i in range(2):  # epochs 1 and 2 cross the baseline inside its evaluations
        n_b = reference_tokens(B_VAL, S_VAL[i])
        assert B_TOKENS[0] < n_b < B_TOKENS[-1]
        assert (f"| {i + 1} | on | {S_TOKENS[i]:,} | {S_VAL[i]:.2f} | {round(n_b):,} | "
                f"{100 * (1 - S_TOKENS[i] / n_b):.1f}% | {B_VAL[i + 1]:.2f} | no | — |") in held_out
    # Epoch 3: 10 < the baseline's best 12 -> never reached, lower bound against 4000; paper reading holds.
    assert (f"| 3 | off | 3,000 | 10.00 | > 4,000 (never reached) | ≥ {100 * (1 - 3000 / 4000):.1f}% | "
            f"{B_VAL[3]:.2f} | yes | 1/4 = 25.0% |") in held_out
    assert f"| student | baseline | held-out | 3 | ≥ {100 * (1 - 3000 / 4000):.1f}% | 3 |" in text  # summary
    train = text.split("train subset perplexity")[1].split("##")[0]
    # Train epoch 2 lands exactly on the baseline's epoch-3 evaluation.
    assert f"| 2 | on | 2,000 | 22.00 | 3,000 | {100 * (1 - 2000 / 3000):.1f}% |" in train


def test_cost_accounting(finished_run):
    text = report_text(finished_run)
    dump = 2 * TEACHER_PARAMS * sum(POSITIONS.values())
    teacher_training = 6 * TEACHER_PARAMS * 300
    saved = 4000 - 3000  # never reached at epoch 3: at least the baseline's last evaluation minus 3000
    per_student = 6 * STUDENT_PARAMS * saved
    assert f"| teacher dump | teacher | 1,000 | 5,500 | {dump:.3g} | 12.5 s | — |" in text
    assert f"| teacher training | teacher | 1,000 | 300 | {teacher_training:.3g} | 30.0 s |" in text
    assert (f"| interpolated, epoch 3 | ≥ 1,000 | ≥ {per_student:.3g} | ≤ {dump / per_student:,.2f} | "
            f"≤ {(dump + teacher_training) / per_student:,.2f} | 330.0 s | > 400.0 s |") in text
    # Paper reading at epoch 3 vs 4: baseline epoch 4 tokens minus student epoch 3 tokens.
    assert f"| paper, epoch 3 vs 4 | 1,000 | {per_student:.3g} | {dump / per_student:,.2f} |" in text
    assert "| stored size | 3.0 MiB |" in text and "train: T=2: mean 90.0%, min 25.0%" in text


def test_figures_are_pngs_and_linked(finished_run):
    (finished_run / "figures").mkdir()
    (finished_run / "figures" / "stale.png").write_bytes(b"old")
    files = build_report(str(finished_run))
    names = sorted(p.name for p in files.figures)
    assert names == ["perplexity_by_epoch.png", "perplexity_by_time.png", "perplexity_by_tokens.png"]
    assert sorted(p.name for p in (finished_run / "figures").iterdir()) == ["index.json", *names]  # stale one gone
    assert sorted(json.loads((finished_run / "figures" / "index.json").read_text())["figures"]) == names
    text = files.markdown.read_text()
    for path in files.figures:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width > 500 and height > 200
        assert f"(figures/{path.name})" in text
    assert not [p for p in finished_run.iterdir() if "partial" in p.name]


def test_partial_run_without_baseline_or_store(tmp_path):
    run = tmp_path / "exp"
    write_run(run / "teacher", "teacher", "teacher", TEACHER_PARAMS, [epoch_event(1, 100, 10.0, 400.0, 450.0)])
    write_run(run / "students" / "student", "student", "student", STUDENT_PARAMS,
              [epoch_event(1, 1000, 110.0, 90.0, 100.0, True)], {"temperature": 2.0})
    with open(run / "students" / "student" / "metrics.jsonl", "a") as handle:
        handle.write('{"event": "epoch", "epo')  # killed mid-write
    (run / "students" / "not-started").mkdir()
    files = build_report(str(run))
    text = files.markdown.read_text()
    assert "## Sample-complexity reduction\n\nSkipped: no baseline" in text
    assert "| teacher dump | teacher | 1,000 | n/a | n/a | n/a | — |" in text
    assert "truncated last line" in text and "not-started: no run.json yet" in text
    assert "| student | student | 4,000 | 1 | 1,000 | 90.00 | 100.00 | n/a | n/a |" in text
    assert len(files.figures) == 3


def test_student_worse_than_baselines_first_evaluation_is_an_upper_bound(finished_run):
    path = finished_run / "students" / "student"
    write_run(path, "student", "student", STUDENT_PARAMS, [epoch_event(1, 1500, 150.0, 200.0, 200.0, True)],
              {"temperature": 2.0})
    text = report_text(finished_run)
    # Baseline was at 150 <= 200 by its first evaluation (1000 tokens): reduction <= 1 - 1500/1000.
    assert f"| ≤ 1,000 (before its first evaluation) | ≤ {100 * (1 - 1500 / 1000):.1f}% |" in text
    assert "never (no saving)" in text


def test_bad_inputs_are_user_errors(tmp_path, finished_run):
    with pytest.raises(UserError, match="does not exist"):
        build_report(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no runs"):
        build_report(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="--baseline 'nope'"):
        build_report(str(finished_run), "nope")
    assert not (finished_run / "report.md").exists()
    (finished_run / "students" / "baseline" / "run.json").write_text("{not json")
    with pytest.raises(UserError, match="baseline/run.json is not valid JSON"):
        build_report(str(finished_run))


def test_cli_prints_the_report_path(finished_run):
    result = CliRunner().invoke(main, ["report", str(finished_run)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(finished_run / "report.md")
    assert (finished_run / "report.md").is_file()


def test_cli_missing_run_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path / "missing")])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: RUN ") and "does not exist" in lines[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_damaged_store_is_named_in_the_notes_and_its_figures_not_used(finished_run):
    shard = next((finished_run / "teacher-logits" / "train" / "ids").rglob("c/0/0"))
    shard.unlink()
    text = build_report(str(finished_run)).markdown.read_text()
    assert "The logit store is damaged" in text and "missing" in text
    assert "| teacher dump | teacher | 1,000 | 5,500 |" not in text
