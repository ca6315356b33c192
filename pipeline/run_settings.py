"""Turning command-line settings (preset, --config FILE, --set, shortcut flags) into resolved configs."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import ModelConfig, TrainConfig, merge_settings, parse_override, resolve, typed_setting
from pipeline.errors import UserError


def load_overrides(config_file: str | None, settings: tuple[str, ...], shortcuts: dict[str, Any],
                   model_file: str | None = None) -> dict[str, dict[str, Any]]:
    """Merge, later winning: a TOML file's [model]/[train] tables, then a --model FILE's spec, then --set
    pairs, then shortcut flags (only those given, i.e. not None), e.g. {"train.epochs": 3}."""
    overrides: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    if config_file:
        path = Path(config_file)
        for section, values in _read_table_file(path, "--config").items():
            if section not in overrides or not isinstance(values, dict):
                raise UserError(f"--config {path}: unknown table [{section}]; use [model] and [train]")
            merge_settings(overrides[section], {name: typed_setting(section, name, value, f"--config {path}")
                                                for name, value in values.items()})
    if model_file:
        merge_settings(overrides["model"], read_model_file(model_file))
    for text in settings:
        section, name, value = parse_override(text)
        merge_settings(overrides[section], {name: value})
    for key, value in shortcuts.items():
        if value is not None:
            section, name = key.split(".")
            overrides[section][name] = value
    return overrides


def read_model_file(location: str) -> dict[str, Any]:
    """A model spec from TOML or JSON (ModelConfig's fields at top level, or under a [model] table)."""
    path = Path(location)
    data = _read_table_file(path, "--model")
    if set(data) == {"model"} and isinstance(data["model"], dict):
        data = data["model"]
    return {name: typed_setting("model", name, value, f"--model {path}") for name, value in data.items()}


def _read_table_file(path: Path, option: str) -> dict[str, Any]:
    """A TOML file, or JSON when it ends in .json: one-line errors for a missing or malformed file."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (FileNotFoundError, IsADirectoryError):
        raise UserError(f"{option} {path}: no such file") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as error:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise UserError(f"{option} {path}: not valid {kind} ({error})") from None
    if not isinstance(data, dict):
        raise UserError(f"{option} {path}: expected a table of settings, got {type(data).__name__}")
    return data


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
