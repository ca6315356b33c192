"""`pipeline train-teacher`: train the (small) teacher with plain next-token cross-entropy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.objectives import DataObjective
from pipeline.run_settings import TrainingStageConfig
from pipeline.training import TrainingRun, train


@dataclass
class TrainTeacherConfig(TrainingStageConfig):
    kind: str = "teacher"
    """Recorded in run.json: "teacher", or "baseline" when the same loop trains a same-size baseline."""


def run(config: TrainTeacherConfig) -> dict[str, Any]:
    tokens, model_config, train_config = config.open()
    return train(TrainingRun(out=Path(config.out), kind=config.kind, model_config=model_config,
                             train_config=train_config, tokens=tokens, objective=DataObjective(),
                             resume=config.resume, force=config.force, inputs=config.inputs(),
                             extra={"preset": config.preset}))
