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
from pipeline.report import build_report, choose_baseline, render_report
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


def write_run(directory: Path, kind, name, params, events, superstill=None, planned=4, seed=0, model=None):
    directory.mkdir(parents=True, exist_ok=True)
    model = model or {"n_layer": 2, "d_model": 64, "vocab_size": 100, "context": 32}  # a gpt spec as older runs wrote
    info = {"kind": kind, "name": name, "model": model,
            "train": {"epochs": planned, "batch_size": 8, "lr": 1e-3, "seed": seed}, "superstill": superstill,
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


def reference_tokens(baseline_ppl, target, tokens=B_TOKENS):
    """n_b on a falling baseline: invert log-ppl -> tokens with numpy (x must increase, so reverse)."""
    return float(np.interp(math.log(target), np.log(baseline_ppl[::-1]), tokens[::-1]))


def reference_power_law_tokens(baseline_ppl, target, tokens=B_TOKENS):
    """The same inversion in log tokens."""
    return math.exp(np.interp(math.log(target), np.log(baseline_ppl[::-1]), np.log(tokens[::-1])))


NO_INTERVAL = "(1 seed: no interval)"


def test_final_perplexity_table(finished_run):
    text = report_text(finished_run)
    # Student's last epoch is 3: divide by the baseline at epoch 3.
    assert (f"| student | student | 4,000 | 1 | 3 | 3,000 | {S_TRAIN[2]:.2f} | {S_VAL[2]:.2f} | "
            f"{S_TRAIN[2] / B_TRAIN[2]:.3f}× | {S_VAL[2] / B_VAL[2]:.3f}× |") in text
    assert f"| baseline | baseline | 4,000 | 1 | 4 | 4,000 | {B_TRAIN[3]:.2f} | {B_VAL[3]:.2f} | — | — |" in text
    assert "| student | student | gpt | 0 | 4,000 | 2 | 64 | 32 | 3 / 4 |" in text
    assert "999" not in text  # the overwritten epoch-2 line of the resumed baseline


def test_sample_complexity_tables(finished_run):
    """The older layout (students/NAME/ is the run, one seed, epoch events only) reads as one seed."""
    text = report_text(finished_run)
    held_out = text.split("held-out perplexity\n\n| tokens n_s")[1].split("###")[0]
    for i in range(2):  # epochs 1 and 2 cross the baseline inside its evaluations
        n_b, n_p = reference_tokens(B_VAL, S_VAL[i]), reference_power_law_tokens(B_VAL, S_VAL[i])
        assert B_TOKENS[0] < n_b < B_TOKENS[-1] and n_p < n_b  # the chord puts n_b later
        reduction = f"{100 * (1 - S_TOKENS[i] / n_b):.1f}%"
        assert (f"| {S_TOKENS[i]:,} | {i + 1}.00 | on | 1 | {S_VAL[i]:.2f} | {round(n_b):,} | {reduction} | "
                f"{reduction} {NO_INTERVAL} | {100 * (1 - S_TOKENS[i] / n_p):.1f}% | no |") in held_out
    # Epoch 3: 10 < the baseline's best 12 -> never reached, lower bound against 4000; paper reading holds.
    bound = f"≥ {100 * (1 - 3000 / 4000):.1f}%"
    assert (f"| 3,000 | 3.00 | off | 1 | 10.00 | > 4,000 (never reached) | {bound} | {bound} {NO_INTERVAL} | "
            f"{bound} | yes: 1/4 = 25.0% |") in held_out
    first = f"{100 * (1 - S_TOKENS[0] / reference_tokens(B_VAL, S_VAL[0])):.1f}%"
    gap = max(abs(S_TOKENS[i] / reference_power_law_tokens(B_VAL, S_VAL[i]) - S_TOKENS[i] / reference_tokens(B_VAL, S_VAL[i]))
              for i in range(2))
    assert (f"| student | baseline | gpt | held-out | 0 | 1 | {first} {NO_INTERVAL} | 3,000 tokens: {bound} {NO_INTERVAL} | "
            f"{100 * gap:.1f} points | 3 |") in text  # summary
    train = text.split("train subset perplexity\n\n")[1].split("##")[0]
    # Train epoch 2 lands exactly on the baseline's epoch-3 evaluation.
    exact = f"{100 * (1 - 2000 / 3000):.1f}%"
    assert f"| 2,000 | 2.00 | on | 1 | 22.00 | 3,000 | {exact} | {exact} {NO_INTERVAL} | {exact} |" in train


def test_each_student_is_compared_with_the_baseline_of_its_architecture(finished_run):
    """Same parameter count on purpose: only the recorded model spec tells the two baselines apart."""
    llama = {"family": "hf", "vocab_size": 100, "context": 32, "model_type": "llama", "options": {"hidden_size": 64}}
    base = [epoch_event(i + 1, B_TOKENS[i], 100.0 * (i + 1), 2 * B_TRAIN[i], 2 * B_VAL[i]) for i in range(4)]
    write_run(finished_run / "students" / "baseline-llama", "baseline", "baseline-llama", STUDENT_PARAMS, base,
              model=llama)
    superstill = {"temperature": 1.0, "w_teacher": 0.5, "w_data": 0.5, "tail": "bucket", "transition_epoch": 2}
    write_run(finished_run / "students" / "llama-s", "student", "llama-s", STUDENT_PARAMS,
              [epoch_event(i + 1, S_TOKENS[i], 110.0 * (i + 1), 2 * S_TRAIN[i], 2 * S_VAL[i], superstill=i < 2)
               for i in range(3)], superstill, model=llama)
    experiment = load_experiment(str(finished_run))
    models = {model.name: model for model in experiment.students}
    assert choose_baseline(experiment, models["llama-s"], None).name == "baseline-llama"
    assert choose_baseline(experiment, models["student"], None).name == "baseline"
    text = report_text(finished_run)
    assert "| llama-s | student | hf:llama | 0 | 4,000 | n/a | 64 | 32 | 3 / 4 |" in text
    assert "| llama-s | baseline-llama | hf:llama | held-out |" in text
    assert "| student | baseline | gpt | held-out |" in text


def test_one_seed_has_no_interval(finished_run):
    text = report_text(finished_run)
    across = text.split("## Perplexity across seeds")[1].split("## Sample")[0]
    change = f"{100 * (S_VAL[0] / B_VAL[0] - 1):+.1f}%"
    assert f"| 1,000 | 1.00 | on | 1 | {B_VAL[0]:.2f} | {S_VAL[0]:.2f} | {change} | {change} {NO_INTERVAL} |" in across
    assert "No run logged a schedule change" in text


def test_cost_accounting(finished_run):
    text = report_text(finished_run)
    dump = 2 * TEACHER_PARAMS * sum(POSITIONS.values())
    teacher_training = 6 * TEACHER_PARAMS * 300
    saved = 4000 - 3000  # never reached at epoch 3: at least the baseline's last evaluation minus 3000
    per_student = 6 * STUDENT_PARAMS * saved
    assert f"| teacher dump | teacher | 1 | 1,000 | 5,500 | {dump:.3g} | 12.5 s | — | — |" in text
    assert f"| teacher training | teacher | 1 | 1,000 | 300 | {teacher_training:.3g} | 30.0 s | n/a |" in text
    assert (f"| interpolated, 3,000 tokens | ≥ 1,000 | ≥ {per_student:.3g} | ≤ {dump / per_student:,.2f} | "
            f"≤ {(dump + teacher_training) / per_student:,.2f} | 330.0 s | > 400.0 s |") in text
    # Paper reading at epoch 3 vs 4: baseline epoch 4 tokens minus student epoch 3 tokens.
    assert f"| paper, epoch 3 vs 4 | 1,000 | {per_student:.3g} | {dump / per_student:,.2f} |" in text
    assert "| stored size | 3.0 MiB |" in text and "train: T=2: mean 90.0%, min 25.0%" in text


FIGURES = ["perplexity_by_epoch.png", "perplexity_by_time.png", "perplexity_by_tokens.png", "reduction_by_tokens.png"]


def check_figures(run: Path, files) -> None:
    """Every figure written is a real PNG of a sensible size, linked from the report, indexed."""
    names = sorted(p.name for p in files.figures)
    assert sorted(p.name for p in (run / "figures").iterdir()) == ["index.json", *names]
    assert sorted(json.loads((run / "figures" / "index.json").read_text())["figures"]) == names
    text = files.markdown.read_text()
    for path in files.figures:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width > 500 and height > 200
        assert f"(figures/{path.name})" in text
    assert not [p for p in run.iterdir() if "partial" in p.name]


def test_figures_are_pngs_and_linked(finished_run):
    (finished_run / "figures").mkdir()
    (finished_run / "figures" / "stale.png").write_bytes(b"old")
    files = build_report(str(finished_run))
    assert sorted(p.name for p in files.figures) == FIGURES  # the stale one is gone
    check_figures(finished_run, files)


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
    assert "| teacher dump | teacher | 1 | 1,000 | n/a | n/a | n/a | — | — |" in text
    assert "truncated last line" in text and "not-started: no run.json or seed-<s>/run.json yet" in text
    assert "| student | student | 4,000 | 1 | 1 | 1,000 | 90.00 | 100.00 | n/a | n/a |" in text
    assert sorted(p.name for p in files.figures) == FIGURES[:3]  # nothing compared: no reduction figure


def test_student_worse_than_baselines_first_evaluation_is_an_upper_bound(finished_run):
    path = finished_run / "students" / "student"
    write_run(path, "student", "student", STUDENT_PARAMS, [epoch_event(1, 1500, 150.0, 200.0, 200.0, True)],
              {"temperature": 2.0})
    text = report_text(finished_run)
    # Baseline was at 150 <= 200 by its first evaluation (1000 tokens): reduction <= 1 - 1500/1000.
    bound = f"≤ {100 * (1 - 1500 / 1000):.1f}%"
    assert f"| ≤ 1,000 (before its first evaluation) | {bound} | {bound} {NO_INTERVAL} |" in text
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


# --- Several seeds, evaluations within epochs (students/NAME/seed-S/, "eval" and "schedule" events) ---

SEEDS = (0, 1, 2)
EVAL_TOKENS = [250 * (i + 1) for i in range(8)]  # 4 evaluations per epoch, 2 epochs of 1000 tokens
# Held-out perplexity after one epoch, from the issue: baseline and T = 1 at seeds 0, 1, 2.
B_EPOCH1, V_EPOCH1 = {0: 163.0, 1: 194.6, 2: 195.9}, {0: 152.7, 1: 162.6, 2: 167.4}


def curve(at_epoch1, tokens):
    """A falling held-out curve through `at_epoch1` at 1000 tokens (any shape works: the test inverts the
    evaluations it wrote, not this formula)."""
    return at_epoch1 * (tokens / 1000) ** -0.6


def teacher_weight(tokens):
    """A linear schedule: 0.6 through epoch 1, then falling to 0 over epoch 2."""
    return 0.6 if tokens <= 1000 else 0.6 * (2000 - tokens) / 1000


def eval_event(tokens, val, superstill):
    w = teacher_weight(tokens) if superstill else None
    return {"event": "eval", "epoch": (tokens - 1) // 1000 + 1, "step": tokens // 10, "tokens_seen": tokens,
            "wall_time_s": tokens / 10, "eval_time_s": 0.5, "train_ppl": 0.9 * val, "train_nll": math.log(0.9 * val),
            "val_ppl": val, "val_nll": math.log(val), "superstill": superstill, "w_teacher": w}


def seed_events(at_epoch1, superstill):
    evals = [eval_event(t, curve(at_epoch1, t), superstill) for t in EVAL_TOKENS]
    # The epoch-end evaluations are also logged as epoch events (with the epoch's training figures).
    epochs = [{**e, "event": "epoch", "epoch": t // 1000, "loss": 1.0, "tokens_per_s": 10.0}
              for e, t in zip(evals, EVAL_TOKENS) if t % 1000 == 0]
    return evals[:4] + epochs[:1] + evals[4:] + epochs[1:]


SCHEDULE = [{"event": "schedule", "epoch": 1, "step": 0, "tokens_seen": 0, "phase": "full", "w_teacher": 0.6,
             "w_data": 0.4, "reason": "linear schedule: full teacher weight"},
            {"event": "schedule", "epoch": 2, "step": 101, "tokens_seen": 1010, "phase": "decaying", "w_teacher": 0.59,
             "w_data": 0.41, "reason": "linear schedule: teacher weight decays to 0 over 1 epochs from epoch 1"}]


@pytest.fixture
def seeded_run(tmp_path):
    run = tmp_path / "exp"
    write_run(run / "teacher", "teacher", "teacher", TEACHER_PARAMS,
              [epoch_event(i + 1, 100 * (i + 1), 10.0 * (i + 1), 400.0 - 50 * i, 450.0 - 50 * i) for i in range(2)])
    superstill = {"temperature": 1.0, "w_teacher": 0.6, "w_data": 0.4, "tail": "bucket", "transition_epoch": "all",
                  "schedule": "linear", "decay_start": 1.0, "decay_epochs": 1.0}
    for seed in SEEDS:
        baseline = seed_events(B_EPOCH1[seed], False)
        if seed == 1:  # a resumed run re-logged its 500-token evaluation: the later line wins
            baseline.insert(0, eval_event(500, 999.0, False))
        write_run(run / "students" / "baseline" / f"seed-{seed}", "baseline", "baseline", STUDENT_PARAMS, baseline,
                  planned=2, seed=seed)
        # Resumed at step 150: the run logs the phase it resumes in again, which is no change.
        resumed = {**SCHEDULE[1], "step": 150, "tokens_seen": 1500, "w_teacher": 0.3, "w_data": 0.7}
        write_run(run / "students" / "T1" / f"seed-{seed}", "student", "T1", STUDENT_PARAMS,
                  seed_events(V_EPOCH1[seed], True) + SCHEDULE + [resumed], superstill, planned=2, seed=seed)
    (run / "experiment.json").write_text(json.dumps({"name": "seeds", "seeds": list(SEEDS), "students": [
        {"name": "baseline"}, {"name": "T1"}]}))
    write_store(run / "teacher-logits")
    return run


def mean_sd(values):
    """Plain arithmetic: mean and sample standard deviation."""
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


T2 = 0.95 * math.sqrt(2 / (1 - 0.95 ** 2))  # t quantile for 2 dof, 95% two-sided: P(|T|<=t) = t/sqrt(t^2+2)


def test_paired_change_with_interval_by_hand(seeded_run):
    text = report_text(seeded_run)
    table = text.split("### T1 vs baseline, held-out perplexity\n\n| tokens seen")[1].split("###")[0]
    b_mean, b_sd = mean_sd(list(B_EPOCH1.values()))
    v_mean, v_sd = mean_sd(list(V_EPOCH1.values()))
    d = [math.log(V_EPOCH1[s] / B_EPOCH1[s]) for s in SEEDS]
    d_mean, d_sd = mean_sd(d)
    low, high = d_mean - T2 * d_sd / math.sqrt(3), d_mean + T2 * d_sd / math.sqrt(3)
    change = (f"{100 * (math.exp(d_mean) - 1):+.1f}% "
              f"[{100 * (math.exp(low) - 1):+.1f}%, {100 * (math.exp(high) - 1):+.1f}%]")
    assert (f"| 1,000 | 1.00 | on (w_t=0.6) | 3 | {b_mean:.2f} ± {b_sd:.2f} | {v_mean:.2f} ± {v_sd:.2f} | "
            f"0: -6.3%, 1: -16.4%, 2: -14.5% | {change} |") in table
    assert "| 250 | 0.25 | on (w_t=0.6) | 3 |" in table and "| 1,500 | 1.50 | on (w_t=0.3) | 3 |" in table
    assert "999" not in text  # the resumed baseline's superseded evaluation
    summary = text.split("## Perplexity across seeds")[1].split("###")[0]
    assert f"| T1 | baseline | 0, 1, 2 | {change} |" in summary
    assert "not resolved (interval holds 0)" in summary  # the same ratio at every point, and the interval holds 0
    # Final table: the paired ratio at epoch 2 (the curves keep their epoch-1 ratio) with its interval.
    ratio = f"{math.exp(d_mean):.3f}× [{math.exp(low):.3f}×, {math.exp(high):.3f}×]"
    assert "| T1 | student | 4,000 | 3 | 2 | 2,000 |" in text and f"| {ratio} |" in text


def test_reduction_over_seeds_from_fine_curves(seeded_run):
    text = report_text(seeded_run)
    table = text.split("### T1 vs baseline, held-out perplexity\n\n| tokens n_s")[1].split("###")[0]
    # After epoch 1 each seed's n_b lies inside epoch 2, between two of its baseline's evaluations.
    reductions = []
    for s in SEEDS:
        b_ppl = [curve(B_EPOCH1[s], t) for t in EVAL_TOKENS]
        n_b = reference_tokens(b_ppl, V_EPOCH1[s], EVAL_TOKENS)
        assert 1000 < n_b < 2000 and n_b not in EVAL_TOKENS
        reductions.append(1 - 1000 / n_b)
    m, sd = mean_sd(reductions)
    half = T2 * sd / math.sqrt(3)
    per_seed = ", ".join(f"{s}: {100 * r:.1f}%" for s, r in zip(SEEDS, reductions))
    cell = f"{100 * m:.1f}% [{100 * (m - half):.1f}%, {100 * (m + half):.1f}%]"
    assert f"| 1,000 | 1.00 | on (w_t=0.6) | 3 | {sum(V_EPOCH1.values()) / 3:.2f} |" in table
    assert f"| {per_seed} | {cell} |" in table
    assert f"| T1 | baseline | gpt | held-out | 0, 1, 2 | 4 | {cell} |" in text  # summary: 4 evaluations per epoch
    # At 2,000 tokens no baseline seed gets as low: every reading is a lower bound against 2,000 tokens.
    assert "| 2,000 | 2.00 | off | 3 |" in table
    assert "| > 2,000 (never reached) | 0: ≥ 0.0%, 1: ≥ 0.0%, 2: ≥ 0.0% | ≥ 0.0% [0.0%, 0.0%] |" in table
    # Inside an epoch the paper's (epoch) reading does not apply.
    assert table.split("| 750 |")[1].split("\n")[0].endswith("| — |")


def test_schedule_changes_are_listed(seeded_run):
    text = report_text(seeded_run)
    section = text.split("## Teacher-weight schedule")[1].split("## Cost")[0]
    for seed in SEEDS:
        assert f"| T1 | {seed} | 101 | 1,010 | decaying | 0.59 | 0.41 | linear schedule: teacher weight decays" in section
        assert f"| T1 | {seed} | 0 | 0 | full | 0.6 | 0.4 | linear schedule: full teacher weight |" in section
    assert "| 150 |" not in section  # the resumed run's repeat of its phase
    assert "linear: full for 1.0 epochs, then to 0 over 1.0" in text  # the runs table


def test_missing_and_unpaired_seeds_are_noted(seeded_run):
    import shutil

    shutil.rmtree(seeded_run / "students" / "baseline" / "seed-2")
    text = report_text(seeded_run)
    assert "baseline: no run yet for seed(s) 2; its statistics use seed(s) 0, 1." in text
    assert "T1 seed 2: no baseline run of that seed to pair with; left out of the statistics." in text
    # Two paired seeds: the interval uses t with 1 dof, tan(0.475 pi) = 12.706.
    d = [math.log(V_EPOCH1[s] / B_EPOCH1[s]) for s in (0, 1)]
    d_mean, d_sd = mean_sd(d)
    half = math.tan(0.475 * math.pi) * d_sd / math.sqrt(2)
    assert (f"| 0: -6.3%, 1: -16.4% | {100 * (math.exp(d_mean) - 1):+.1f}% "
            f"[{100 * (math.exp(d_mean - half) - 1):+.1f}%, {100 * (math.exp(d_mean + half) - 1):+.1f}%] |") in text


def test_seeded_figures_and_evaluation_time(seeded_run):
    files = build_report(str(seeded_run))
    assert sorted(p.name for p in files.figures) == FIGURES
    check_figures(seeded_run, files)
    text = files.markdown.read_text()
    # 8 evaluations of 0.5 s per seed; training wall-clock 200 s at 2,000 tokens (mean over seeds).
    assert "| student training | T1 | 3 | 4,000 | 2,000 | " in text and "| 200.0 s | 4.0 s | 10 |" in text


def test_two_runs_claiming_one_seed_are_refused(seeded_run):
    info = json.loads((seeded_run / "students" / "T1" / "seed-1" / "run.json").read_text())
    info["train"]["seed"] = 0
    (seeded_run / "students" / "T1" / "seed-1" / "run.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match="two runs record the same train.seed"):
        load_experiment(str(seeded_run))
