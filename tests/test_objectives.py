"""Objectives: teacher-weight schedules as the training loop sees them, step by step."""

import math

import pytest

from pipeline.distillation import DistillationSpec
from pipeline.objectives import SuperstillObjective

# A synthetic stream of evaluation points: (epochs elapsed, student held-out NLL); the teacher's is 5.0.
TEACHER_NLL = 5.0
STREAM = [(0.25, 6.1), (0.5, 5.6), (0.75, 5.2), (1.0, 4.98), (1.25, 4.7), (1.5, 4.6)]


def test_auto_schedule_starts_decaying_at_the_first_evaluation_that_reaches_the_teacher():
    objective = SuperstillObjective(DistillationSpec(schedule="auto", decay_epochs=0.5), teacher_nll=TEACHER_NLL)
    seen = []
    for elapsed, nll in STREAM:
        seen.append(objective.weights(int(elapsed) + 1, elapsed)[0])
        objective.observe(elapsed, nll)
    assert objective.caught_up == 1.0  # 4.98 <= 5.0 is the first crossing; later points change nothing
    assert seen[:4] == [0.6] * 4  # full weight up to and including the crossing's own step
    # From the crossing: w1 = 0.6 * (1 - (e - 1.0) / 0.5), w1 + w2 constant.
    for elapsed in (1.0, 1.1, 1.25, 1.5, 2.0):
        w1, w2 = objective.weights(int(elapsed) + 1, elapsed)
        assert w1 == pytest.approx(0.6 * min(1.0, max(0.0, 1 - (elapsed - 1.0) / 0.5)))
        assert w1 + w2 == pytest.approx(1.0)
    assert objective.uses_teacher(2) and not objective.uses_teacher(3)
    phase, reason = objective.schedule_phase(2, 1.25)
    assert phase == "decaying" and "epoch 1" in reason and "reached the teacher's" in reason


def test_auto_schedule_state_survives_a_checkpoint_and_unmeasured_points_never_trigger():
    objective = SuperstillObjective(DistillationSpec(schedule="auto"), teacher_nll=TEACHER_NLL)
    objective.observe(0.5, math.nan)  # no held-out split
    assert objective.caught_up is None and objective.weights(1, 0.5)[0] == 0.6
    objective.observe(0.75, 4.0)
    resumed = SuperstillObjective(DistillationSpec(schedule="auto"), teacher_nll=TEACHER_NLL)
    resumed.load_state(objective.state())
    assert resumed.caught_up == 0.75 and resumed.weights(1, 0.9) == objective.weights(1, 0.9)


def test_step_and_linear_schedules_ignore_observations():
    for spec in (DistillationSpec(schedule="step", transition_epoch=1),
                 DistillationSpec(schedule="linear", decay_start=1.0)):
        objective = SuperstillObjective(spec, teacher_nll=TEACHER_NLL)
        objective.observe(0.5, 1.0)
        assert objective.caught_up is None and objective.weights(1, 0.5) == (0.6, 0.4)
