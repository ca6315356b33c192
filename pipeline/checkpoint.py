"""Checkpoints: everything needed to resume a run exactly, in a file that loads with weights_only=True.

Only tensors, numbers, strings, lists, tuples and dicts go in, so `torch.load(..., weights_only=True)`
can read a file a colleague sent without executing anything from it.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from pipeline import __version__
from pipeline.config import ModelConfig, TrainConfig, model_config_from_dict, to_dict
from pipeline.errors import UserError
from pipeline.run_dir import CHECKPOINT_FILE
from pipeline.storage import atomic_write_bytes

FORMAT_NAME = "superstill.checkpoint"
FORMAT_VERSION = 2  # 2: records the run identity; version 1 files still load (and resume, checked on the model only)


def resolve_path(path: str | os.PathLike, option: str = "--checkpoint") -> Path:
    """Accept a checkpoint file or a run directory holding checkpoint.pt."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise UserError(f"{option} {path}: no checkpoint there; pass a run directory or its {CHECKPOINT_FILE}")
    return path


def rng_state() -> dict[str, Any]:
    # Only torch's generators draw randomness during training (dropout, init); data order is a pure
    # function of (seed, epoch), so it needs no saved state.
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str | os.PathLike, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
         scheduler: Any, model_config: ModelConfig, train_config: TrainConfig, run: dict[str, Any],
         position: dict[str, Any], identity: dict[str, Any] | None = None,
         objective_state: dict[str, Any] | None = None) -> None:
    """Write atomically: a crash mid-save leaves the previous checkpoint intact. `identity` is what
    `--resume` must match (pipeline/run_identity.py)."""
    payload = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "tool_version": __version__,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "model_config": to_dict(model_config), "train_config": to_dict(train_config),
        "run": run, "position": position, "rng": rng_state(), "identity": identity,
        "objective_state": objective_state or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load(path: str | os.PathLike, option: str = "--checkpoint") -> dict[str, Any]:
    """Load safely; a truncated or foreign file is a one-line error, not a traceback."""
    path = resolve_path(path, option)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"{option} {path} is not a readable checkpoint ({type(error).__name__}: "
                        f"{str(error).splitlines()[0][:120]}); it may be truncated or corrupt") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise UserError(f"{option} {path} is not a superstill checkpoint")
    if payload.get("version", 0) > FORMAT_VERSION:
        raise UserError(f"{option} {path} has checkpoint format {payload['version']}; upgrade superstill")
    return payload


def load_model(path: str | os.PathLike, option: str = "--checkpoint"):
    """A model in eval mode with the checkpoint's weights, plus the checkpoint payload.

    Weights that do not fit the recorded model, or are not finite, are a one-line error: a model built
    from them would only produce NaN rows or a shape traceback later."""
    from pipeline.model_families import build_model

    payload = load(path, option)
    where = f"{option} {resolve_path(path, option)}"
    if not isinstance(payload.get("model_config"), dict) or not isinstance(payload.get("model"), dict):
        raise UserError(f"{where} has no model settings or weights; it is incomplete: use another checkpoint")
    model = build_model(model_config_from_dict(payload["model_config"], f"{where} model"), probe=False)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise UserError(f"{where}: its weights do not fit its recorded model ({str(error).splitlines()[-1].strip()[:160]}); "
                        f"the file is inconsistent: use another checkpoint") from None
    broken = [name for name, tensor in payload["model"].items()
              if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if broken:
        raise UserError(f"{where} holds non-finite weights ({', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''}); "
                        f"the run diverged before it was saved: use an earlier checkpoint")
    return model.eval(), payload


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(resolve_path(path), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
