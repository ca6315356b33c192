"""`pipeline train-teacher`: train the (small) teacher with plain next-token cross-entropy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.objectives import DataObjective
from pipeline.run_settings import resolve_for_tokens
from pipeline.token_store import TokenStore
from pipeline.training import TrainingRun, train


@dataclass
class TrainTeacherConfig:
    tokens: str
    """Token store to train on."""
    out: str
    """Run directory (run.json, metrics.jsonl, checkpoint.pt)."""
    preset: str = "paper-small-teacher"
    """Model and training preset (pipeline.config.PRESETS)."""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """{"model": {...}, "train": {...}} on top of the preset."""
    resume: bool = False
    force: bool = False
    kind: str = "teacher"
    """Recorded in run.json: "teacher", or "baseline" when the same loop trains a same-size baseline."""


def run(config: TrainTeacherConfig) -> dict[str, Any]:
    tokens = TokenStore.open(config.tokens)
    model_config, train_config = resolve_for_tokens(config.preset, config.overrides, tokens.vocab_size)
    return train(TrainingRun(out=Path(config.out), kind=config.kind, model_config=model_config,
                             train_config=train_config, tokens=tokens, objective=DataObjective(),
                             resume=config.resume, force=config.force, extra={"preset": config.preset}))
