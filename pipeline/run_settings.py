"""Turning command-line settings (preset, --config FILE, --set, shortcut flags) into resolved configs."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import ModelConfig, TrainConfig, parse_override, resolve, typed_setting
from pipeline.errors import UserError


def load_overrides(config_file: str | None, settings: tuple[str, ...], shortcuts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Merge, later winning: a TOML file's [model]/[train] tables, then --set pairs, then shortcut flags
    (only those given, i.e. not None), e.g. {"train.epochs": 3}."""
    overrides: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    if config_file:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, IsADirectoryError):
            raise UserError(f"--config {path}: no such file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise UserError(f"--config {path}: not valid TOML ({error})") from None
        for section, values in data.items():
            if section not in overrides or not isinstance(values, dict):
                raise UserError(f"--config {path}: unknown table [{section}]; use [model] and [train]")
            overrides[section].update({name: typed_setting(section, name, value, f"--config {path}")
                                       for name, value in values.items()})
    for text in settings:
        section, name, value = parse_override(text)
        overrides[section][name] = value
    for key, value in shortcuts.items():
        if value is not None:
            section, name = key.split(".")
            overrides[section][name] = value
    return overrides


def resolve_for_tokens(preset: str, overrides: dict[str, dict[str, Any]], vocab_size: int,
                       where: str = "") -> tuple[ModelConfig, TrainConfig]:
    """Resolve a preset and fill the vocabulary size from the token store when not set explicitly."""
    model, train = resolve(preset, overrides, where)
    if model.vocab_size == 0:
        model.vocab_size = vocab_size
    return model, train


@dataclass
class TrainingStageConfig:
    """What every training stage (train-teacher, train-student) takes."""

    tokens: str
    """Token store to train on."""
    out: str
    """Run directory (run.json, metrics.jsonl, checkpoint.pt)."""
    preset: str = "paper-small-teacher"
    """Model and training preset (pipeline.config.PRESETS)."""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """{"model": {...}, "train": {...}} on top of the preset."""
    resume: bool = False
    """Continue the run in `out` from its checkpoint."""
    force: bool = False
    """Start over even if `out` holds a run."""

    def inputs(self) -> dict[str, str | None]:
        """The command's inputs by option: its output must lie apart from each."""
        return {"--tokens": self.tokens}

    def open(self):
        """(token store, model config, train config) with the vocabulary filled in from the store."""
        from pipeline.token_store import TokenStore

        tokens = TokenStore.open(self.tokens)
        return (tokens, *resolve_for_tokens(self.preset, self.overrides, tokens.vocab_size))
