"""What defines a training run, so `--resume` continues only the run that was started.

A checkpoint records the run's identity: the model spec, the train settings except those a resume may
change (`TrainConfig.RESUMABLE_CHANGES`: epochs, device, ...), the objective (distillation spec, or none),
the fingerprint of the tokens and of the teacher (logit store content, or online teacher checkpoint).
`--resume` compares it with what the command line asks for and refuses any difference, naming it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pipeline.config import ModelConfig, TrainConfig, to_dict

# Objective fields that say where things are, not what is learned (a store may be moved or copied).
_LOCATIONS = ("teacher_logits",)


def run_identity(model: ModelConfig, train: TrainConfig, objective: dict[str, Any] | None, token_fingerprint: str,
                 teacher: str | None) -> dict[str, Any]:
    """The settings and inputs that make a run this run (JSON-able; stored in every checkpoint)."""
    return {"model": _model_identity(model),
            "train": {k: v for k, v in to_dict(train).items() if k not in TrainConfig.RESUMABLE_CHANGES},
            "objective": {k: v for k, v in (objective or {}).items() if k not in _LOCATIONS} or None,
            "tokens": token_fingerprint, "teacher": teacher}


def _model_identity(model: ModelConfig) -> dict[str, Any]:
    """The model spec; a gpt spec without its family, as checkpoints recorded it before there were families."""
    data = to_dict(model)
    return {k: v for k, v in data.items() if k != "family"} if model.family == "gpt" else data


SECTIONS = ("tokens", "teacher", "objective", "model", "train")
"""Identity sections, most telling first (a different input explains every other difference)."""


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One phrase per difference, inputs first, e.g. "train.lr 0.001 in the checkpoint, 0.002 now"."""
    saved, current = _jsonable(saved), _jsonable(current)
    phrases = []
    for section in [s for s in SECTIONS if s in saved or s in current]:
        before, now = saved.get(section), current.get(section)
        if isinstance(before, dict) and isinstance(now, dict):
            pairs = [(f"{section}.{key}", before.get(key, "(unset)"), now.get(key, "(unset)"))
                     for key in sorted(set(before) | set(now))]
        else:
            pairs = [(section, before, now)]
        phrases += [f"{key} {_short(a)} in the checkpoint, {_short(b)} now" for key, a, b in pairs if a != b]
    return phrases


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, dict) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 48 else text[:45] + "..."


def store_fingerprint(meta) -> str:
    """sha256 over what defines a logit store's content (its tokens, teacher and dump settings)."""
    from pipeline.logit_store import CONTENT_FIELDS

    data = meta.to_dict()
    payload = json.dumps({name: data.get(name) for name in CONTENT_FIELDS}, sort_keys=True)
    return "logit store sha256 " + hashlib.sha256(payload.encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    """Tuples as lists, as they come back from a checkpoint or JSON."""
    return json.loads(json.dumps(value))

