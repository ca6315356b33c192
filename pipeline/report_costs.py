"""Cost accounting: FLOPs of training and of the teacher dump, and when a dump pays for itself.

Standard approximations (Kaplan et al. 2020), with N the parameter count as run.json records it
(embeddings included, which overstates small models with large vocabularies — for all runs alike):
- training: ~6 N FLOPs per token (forward 2N + backward 4N);
- the dump: ~2 N_teacher FLOPs per stored position (one forward pass).
A superstilled student is charged the same 6 N per token as its baseline: the teacher term adds only
O(k) arithmetic per position on probabilities read from the store, which is ignored here; its real
overhead shows in the wall-clock columns instead.

With several seeds every figure is per seed, averaged over the seeds (each seed's run is a separate
training of the same cost). Evaluation time (the "eval" events' eval_time_s) is shown apart from the
training wall-clock.

Break-even: a dump costs D FLOPs once; every student trained from it to perplexity P saves
6 N_student (n_b - n_s) FLOPs against its baseline. The store must serve D / that many students
before the dump has paid for itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from pipeline import report_markdown as md
from pipeline.report_runs import Experiment, ModelRuns, RunResult, number
from pipeline.sample_complexity import BEFORE_FIRST, MIXED, NEVER_REACHED, SeedReductions

TRAIN_FLOPS_PER_PARAMETER_TOKEN = 6.0
FORWARD_FLOPS_PER_PARAMETER_TOKEN = 2.0


def training_flops(parameters: float | None, tokens: float | None) -> float | None:
    """~6 N T; None when either is unknown."""
    if parameters is None or tokens is None:
        return None
    return TRAIN_FLOPS_PER_PARAMETER_TOKEN * parameters * tokens


def dump_flops(teacher_parameters: float | None, positions: float | None) -> float | None:
    """~2 N_teacher P for one forward pass over every stored position; None when either is unknown."""
    if teacher_parameters is None or positions is None:
        return None
    return FORWARD_FLOPS_PER_PARAMETER_TOKEN * teacher_parameters * positions


def break_even_students(cost_flops: float | None, student_parameters: float | None,
                        tokens_saved: float | None) -> float | None:
    """cost / (6 N_student tokens_saved): students needed to recoup `cost`; None if nothing is saved."""
    saved = training_flops(student_parameters, tokens_saved)
    if cost_flops is None or saved is None or saved <= 0:
        return None
    return cost_flops / saved


def interpolate(xs: Sequence[float], ys: Sequence[float], at: float) -> float | None:
    """y at x = `at`, linear between the points (e.g. wall-clock seconds at a token count); None outside."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= at <= x1 and x1 > x0:
            return y0 + (y1 - y0) * (at - x0) / (x1 - x0)
    if xs and at == xs[0]:
        return ys[0]
    return None


@dataclass(frozen=True)
class CostRow:
    """One superstilled model's saving against its baseline, on held-out perplexity."""

    student: ModelRuns
    baseline: ModelRuns
    last: SeedReductions
    """The interpolated reading at the student's last evaluation, per seed and pooled."""
    paper_epoch: int | None
    """The latest epoch n where P_s(n) <= P_b(n + 1) on every seed, if any."""


def mean(values: Sequence[float | None]) -> float | None:
    """The mean of the known values; None when none is known."""
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def per_seed_mean(model: ModelRuns, value: Callable[[RunResult], float | None]) -> float | None:
    """`value` of each seed's run, averaged over the seeds that have it."""
    return mean([value(run) for run in model.runs])


def _stat(store: dict[str, Any] | None, *keys: str) -> Any:
    """store[k1][k2]... or None when any level is missing."""
    value: Any = store
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def total_positions(store: dict[str, Any] | None) -> float | None:
    """Positions dumped over all splits (each cost one teacher forward)."""
    positions = _stat(store, "positions")
    values = [number(v) for v in positions.values()] if isinstance(positions, dict) else []
    return sum(values) if values and None not in values else None


def _compute_row(stage: str, model: ModelRuns) -> list[str]:
    tokens = per_seed_mean(model, lambda run: run.last("tokens_seen"))
    return [stage, model.name, len(model.runs), md.count(model.parameters), md.count(tokens),
            md.flops(training_flops(model.parameters, tokens)),
            md.seconds(per_seed_mean(model, lambda run: run.last("wall_time_s"))),
            md.seconds(per_seed_mean(model, RunResult.eval_seconds)),
            md.count(per_seed_mean(model, lambda run: run.last("tokens_per_s")))]


def _compute_table(experiment: Experiment) -> str:
    teacher, store = experiment.teacher, experiment.store
    t_params = teacher.parameters if teacher else None
    rows = [_compute_row("teacher training", teacher)] if teacher else []
    positions = total_positions(store)
    dump_time = number(_stat(store, "stats", "dump_wall_time_s"))
    rows.append(["teacher dump", teacher.name if teacher else md.NA, 1, md.count(t_params), md.count(positions),
                 md.flops(dump_flops(t_params, positions)), md.seconds(dump_time), "—", "—"])
    rows += [_compute_row(f"{model.kind} training", model) for model in experiment.students]
    headers = ["stage", "model", "seeds", "params", "tokens / positions", "FLOPs (approx.)", "training wall-clock",
               "evaluation wall-clock", "tokens/s"]
    return ("### Compute\n\nPer seed (the mean over a model's seeds); a model trained at n seeds cost n times "
            "this. Evaluation wall-clock: the evaluations' own time (n/a for runs that did not log it).\n\n"
            + md.table(headers, rows))


def _store_table(experiment: Experiment) -> str:
    store = experiment.store
    # stats.topk_mass = {split: {T: {"mean": ..., "min": ...}}} as written by LogitStoreWriter.finish
    mass = _stat(store, "stats", "topk_mass")
    mass_text = "; ".join(f"{split}: " + ", ".join(f"T={t}: mean {md.percent(number(m.get('mean')))}, "
                                                   f"min {md.percent(number(m.get('min')))}" for t, m in per_t.items())
                          for split, per_t in mass.items()) if isinstance(mass, dict) else md.NA
    positions = _stat(store, "positions")
    positions_text = (", ".join(f"{split}: {md.count(number(n))}" for split, n in positions.items())
                      if isinstance(positions, dict) else md.NA)
    rows = [["location", md.plain(experiment.store_path)], ["k (stored top-k)", md.plain(_stat(store, "k"))],
            ["temperatures", md.plain(_stat(store, "temperatures"))], ["positions", positions_text],
            ["bytes per position", md.decimal(number(_stat(store, "stats", "bytes_per_position")))],
            ["stored size", md.size(number(_stat(store, "stats", "stored_bytes")))],
            ["mean top-k probability mass", mass_text]]
    if _stat(store, "rows") == "sampled":  # ids drawn from the teacher (docs/STORE.md section 10), no top-k
        distinct = _stat(store, "stats", "distinct_ids")
        rows[1:2] = [["rows", f"sampled: {md.plain(_stat(store, 'samples'))} draws per position"]]
        rows[-1] = ["mean distinct ids per position", "; ".join(f"{split}: {md.decimal(number(v.get('mean')))}"
                                                          for split, v in distinct.items())
                    if isinstance(distinct, dict) else md.NA]
    return "### Teacher logit store\n\n" + md.table(["", "value"], rows)


BREAK_EVEN_INTRO = """### Break-even

Assumptions: training costs ~6 × params × tokens FLOPs and a superstilled student costs the same per
token as its baseline (the teacher term's O(k) work per position is ignored; its real overhead shows in
the wall-clock columns); the dump costs ~2 × teacher params × positions. A student of this size
trained to this held-out perplexity saves 6 × student params × (n_b − n_s) FLOPs, so the store must
serve dump FLOPs / that many such students before the dump has paid for itself. The last column also
charges the teacher's training, for when the teacher exists only to make the store. Readings: the
interpolated one at the student's last evaluation, and the paper's at the latest epoch n where
P_s(n) ≤ P_b(n+1) on every seed (then n_b is the baseline's tokens at epoch n + 1). Tokens saved and
wall-clock are means over the paired seeds; "~" marks a mean over bounds of both directions."""


def _saving_cells(saved: float | None, student_params: float | None, costs: list[float | None],
                  saved_prefix: str, even_prefix: str) -> list[str]:
    """tokens saved, FLOPs saved, then students-to-break-even for each cost ("never" without a saving)."""
    cells = [saved_prefix + md.count(saved), saved_prefix + md.flops(training_flops(student_params, saved))]
    for cost in costs:
        students = break_even_students(cost, student_params, saved)
        if saved is not None and saved <= 0:
            cells.append("never (no saving)")
        else:
            cells.append(md.NA if students is None else f"{even_prefix}{students:,.2f}")
    return cells


def _seed_times(row: CostRow, seed) -> tuple[float | None, float | None]:
    """One seed's wall-clock: the student's at its reading, the baseline's at n_b (its last evaluation when
    never reached, its first when reached before it: the same bound as n_b)."""
    r, student, baseline = row.last.per_seed[seed], row.student.run(seed), row.baseline.run(seed)
    s_tokens, s_times = student.curve("tokens_seen", "wall_time_s", fine=True)
    b_tokens, b_times = baseline.curve("tokens_seen", "wall_time_s", fine=True)
    b_time = {NEVER_REACHED: b_times[-1] if b_times else None, BEFORE_FIRST: b_times[0] if b_times else None
              }.get(r.kind, interpolate(b_tokens, b_times, r.baseline_tokens))
    return interpolate(s_tokens, s_times, r.tokens), b_time


def _interpolated_row(row: CostRow, costs: list[float | None]) -> list[str]:
    r = row.last
    # A saving measured against a bound is itself a bound: more saved means fewer students to break even.
    saved_prefix, even_prefix = {NEVER_REACHED: ("≥ ", "≤ "), BEFORE_FIRST: ("≤ ", "≥ "),
                                 MIXED: ("~ ", "~ ")}.get(r.kind, ("", ""))
    times = [_seed_times(row, seed) for seed in r.per_seed]
    s_time, b_time = mean([t[0] for t in times]), mean([t[1] for t in times])
    time_prefix = {NEVER_REACHED: "> ", BEFORE_FIRST: "≤ ", MIXED: "~ "}.get(r.kind, "") if b_time is not None else ""
    return ([row.student.name, row.baseline.name, len(r.per_seed), f"interpolated, {md.count(r.tokens)} tokens"]
            + _saving_cells(r.tokens_saved, row.student.parameters, costs, saved_prefix, even_prefix)
            + [md.seconds(s_time), time_prefix + md.seconds(b_time)])


def _paper_row(row: CostRow, costs: list[float | None]) -> list[str]:
    n = row.paper_epoch
    pairs = [(run, row.baseline.run(run.seed)) for run in row.student.runs if row.baseline.run(run.seed)]
    saved = [None if None in (b.value_at(n + 1, "tokens_seen"), s.value_at(n, "tokens_seen"))
             else b.value_at(n + 1, "tokens_seen") - s.value_at(n, "tokens_seen") for s, b in pairs]
    return ([row.student.name, row.baseline.name, len(pairs), f"paper, epoch {n} vs {n + 1}"]
            + _saving_cells(mean(saved), row.student.parameters, costs, "", "")
            + [md.seconds(mean([s.value_at(n, "wall_time_s") for s, _ in pairs])),
               md.seconds(mean([b.value_at(n + 1, "wall_time_s") for _, b in pairs]))])


def _break_even_table(experiment: Experiment, rows: list[CostRow]) -> str:
    if not rows:
        return "### Break-even\n\nSkipped: no superstilled student has been compared with a baseline yet."
    teacher = experiment.teacher
    t_params = teacher.parameters if teacher else None
    dump = dump_flops(t_params, total_positions(experiment.store))
    teacher_training = training_flops(t_params, teacher.first.last("tokens_seen")) if teacher else None
    costs = [dump, None if dump is None or teacher_training is None else dump + teacher_training]
    table_rows = []
    for row in rows:
        table_rows.append(_interpolated_row(row, costs))
        if row.paper_epoch is not None:
            table_rows.append(_paper_row(row, costs))
    headers = ["student", "baseline", "seeds", "reading", "tokens saved per student", "FLOPs saved per student",
               "students to repay the dump", "… dump + teacher training", "student wall-clock",
               "baseline wall-clock to same ppl"]
    return BREAK_EVEN_INTRO + "\n\n" + md.table(headers, table_rows)


def cost_section(experiment: Experiment, rows: list[CostRow]) -> str:
    """Compute, the store, and break-even per superstilled student."""
    return "\n\n".join(["## Cost accounting", _compute_table(experiment), _store_table(experiment),
                        _break_even_table(experiment, rows)])
