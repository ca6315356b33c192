"""Typed configs for models and training, validated on construction, round-tripping through dicts.

Presets are plain data (`PRESETS`): a preset fills a `ModelConfig` and a `TrainConfig`, and any field
can then be overridden from the CLI (`--set model.n_layer=6`) or a TOML file. The resolved config is
saved next to every output.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

from pipeline.errors import UserError
from pipeline.spec_parsing import build_spec, coerce, field_names
from pipeline.tensorboard_log import LOGGERS


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


DEVICE_HELP = "auto (CUDA when available), cpu, cuda or cuda:N"
PRECISIONS = ("auto", "fp32", "bf16")
"""Compute precision: auto = bf16 autocast on CUDA, fp32 elsewhere."""


def resolved_precision(precision: str, device_type: str) -> str:
    """"fp32" or "bf16" for a PRECISIONS value on a device type ("cuda", "cpu")."""
    if precision == "auto":
        return "bf16" if device_type == "cuda" else "fp32"
    return precision


def check_device_name(name: str, option: str = "--device") -> str:
    """A device name's form (whether that device exists is checked when it is used)."""
    kind, _, index = str(name).partition(":")
    if not (name in ("auto", "cpu", "cuda") or (kind == "cuda" and index.isdigit())):
        raise UserError(f"{option} {name!r} is not a device; use {DEVICE_HELP}")
    return name


@dataclass
class ModelConfig:
    """A GPT-1-style decoder-only transformer."""

    vocab_size: int = 0
    """Output classes; 0 means "take it from the token store"."""
    n_layer: int = 2
    """Transformer blocks."""
    n_head: int = 12
    """Attention heads; must divide d_model."""
    d_model: int = 768
    """Width of the residual stream."""
    d_ff: int = 3072
    """Hidden width of each feed-forward block."""
    context: int = 256
    """Maximum sequence length (learned positional embeddings)."""
    dropout: float = 0.1
    """Dropout on embeddings, attention weights and residual branches (GPT-1 used 0.1)."""
    tie_embeddings: bool = True
    """Share the input embedding with the output head (the paper's large student is untied)."""
    bias: bool = True
    """Biases in linear layers and layer norms, as in GPT-1."""

    def __post_init__(self) -> None:
        _check(self.vocab_size >= 0, f"model.vocab_size must be >= 0, got {self.vocab_size}")
        for name in ("n_layer", "n_head", "d_model", "d_ff", "context"):
            _check(getattr(self, name) > 0, f"model.{name} must be positive, got {getattr(self, name)}")
        _check(self.d_model % self.n_head == 0,
               f"model.d_model ({self.d_model}) must be divisible by model.n_head ({self.n_head})")
        _check(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TrainConfig:
    """How the one training loop runs (teacher, baseline and student alike)."""

    epochs: int = 1
    """Passes over the training split."""
    batch_size: int = 16
    """Windows per optimizer step (per process under torchrun)."""
    lr: float = 3e-4
    """Adam learning rate (the paper's)."""
    betas: tuple[float, float] = (0.9, 0.98)
    """Adam betas (the paper's)."""
    eps: float = 1e-8
    """Adam epsilon (the paper's)."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW when > 0)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    lr_schedule: str = "constant"
    """"constant" (the paper) or "cosine" decay to 10% after warmup."""
    warmup_steps: int = 0
    """Linear warmup steps."""
    seed: int = 0
    """Seeds initialization, dropout and data order."""
    shuffle_block_tokens: int = 65536
    """Windows are shuffled within and across blocks of this many positions (aligned to logit-store shards)."""
    eval_train_fraction: float = 0.01
    """Fraction of the training split (its start) evaluated each epoch: the paper's train perplexity."""
    eval_max_tokens: int = 0
    """Cap on tokens evaluated per split each epoch (0 = no cap)."""
    eval_batch_size: int = 32
    """Windows per evaluation batch."""
    logger: str = "jsonl"
    """Where metrics go besides metrics.jsonl/steps.jsonl (always written): "jsonl" (nowhere else) or
    "tensorboard" (event files in RUN/tensorboard/; needs the tensorboard extra)."""
    eval_every: float = 0.0
    """Also evaluate inside epochs: 0 = at epoch ends only; in (0, 1) = every this fraction of an epoch
    (0.25: four times per epoch); >= 1 = every this many training tokens. Rounded to whole steps."""
    checkpoint_every: int = 0
    """Also checkpoint every N steps inside an epoch (0: at epoch ends only)."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu", "cuda", "cuda:N"."""
    precision: str = "auto"
    """"auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32" or "bf16"."""
    compile: bool = False
    """torch.compile the model (CUDA; slower to start, faster per step)."""
    max_steps_per_epoch: int = 0
    """Stop each epoch after this many steps (0 = full epoch); for smoke tests and benchmarks."""

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        _check(self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        _check(math.isfinite(self.lr) and self.lr > 0, f"train.lr must be a positive number, got {self.lr}")
        _check(self.eps > 0 and self.weight_decay >= 0 and self.grad_clip >= 0,
               "train.eps must be > 0 and train.weight_decay, train.grad_clip >= 0")
        _check(self.warmup_steps >= 0 and self.eval_max_tokens >= 0 and self.checkpoint_every >= 0
               and self.max_steps_per_epoch >= 0,
               "train.warmup_steps, eval_max_tokens, checkpoint_every and max_steps_per_epoch must be >= 0")
        _check(self.eval_batch_size >= 1, f"train.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        _check(self.logger in LOGGERS, f"train.logger must be one of {', '.join(LOGGERS)}, got {self.logger!r}")
        _check(self.eval_every >= 0, f"train.eval_every must be >= 0 (0: at epoch ends only), got {self.eval_every}")
        check_device_name(self.device, "train.device")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"train.betas must be two numbers in [0, 1), got {self.betas}")
        _check(self.lr_schedule in ("constant", "cosine"), f"train.lr_schedule must be constant or cosine, got {self.lr_schedule!r}")
        _check(0 < self.eval_train_fraction <= 1, f"train.eval_train_fraction must be in (0, 1], got {self.eval_train_fraction}")
        _check(self.precision in PRECISIONS, f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _check(self.shuffle_block_tokens >= 1, "train.shuffle_block_tokens must be positive")

    # Settings a resumed run may change: they say how long and where it runs, not what it learns.
    # Everything else is part of the run's identity (pipeline/run_identity.py).
    RESUMABLE_CHANGES = ("epochs", "device", "compile", "checkpoint_every", "eval_batch_size", "eval_every",
                         "logger")

    def eval_steps(self, steps_per_epoch: int, tokens_per_step: int) -> int:
        """Steps between evaluations inside an epoch (0: at epoch ends only)."""
        if self.eval_every == 0:
            return 0
        if self.eval_every < 1:
            return max(1, round(self.eval_every * steps_per_epoch))
        return max(1, round(self.eval_every / tokens_per_step))


PAPER = dict(d_model=768, d_ff=3072, n_head=12)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The paper's small-scale run: 2-layer teacher, 4-layer student, context 256, batch 16.
    "paper-small-teacher": {"model": dict(PAPER, n_layer=2, context=256), "train": dict(batch_size=16)},
    "paper-small-student": {"model": dict(PAPER, n_layer=4, context=256), "train": dict(batch_size=16)},
    # The paper's large-scale run: 4-layer teacher, 12-layer student (untied, ~161M at 50k words), context 512, batch 32.
    "paper-large-teacher": {"model": dict(PAPER, n_layer=4, context=512, tie_embeddings=False), "train": dict(batch_size=32)},
    "paper-large-student": {"model": dict(PAPER, n_layer=12, context=512, tie_embeddings=False), "train": dict(batch_size=32)},
    # CPU-sized, same 1:2 layer ratio: an epoch over the Shakespeare corpus in minutes on 2 cores.
    "tiny-teacher": {"model": dict(n_layer=1, d_model=128, d_ff=512, n_head=4, context=64), "train": dict(batch_size=32, lr=1e-3)},
    "tiny-student": {"model": dict(n_layer=2, d_model=128, d_ff=512, n_head=4, context=64), "train": dict(batch_size=32, lr=1e-3)},
}


SECTIONS = {"model": ModelConfig, "train": TrainConfig}


def parse_override(text: str) -> tuple[str, str, Any]:
    """`section.field=value` -> (section, field, value parsed by the field's type)."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or section not in SECTIONS:
        raise UserError(f"--set {text!r}: expected model.FIELD=VALUE or train.FIELD=VALUE")
    return section, name, typed_setting(section, name, raw.strip(), f"--set {text!r}", from_text=True)


def typed_setting(section: str, name: str, value: Any, where: str, from_text: bool = False) -> Any:
    """One model/train setting, type-checked against its field as soon as it is read."""
    cls = SECTIONS[section]
    if name not in field_names(cls):
        raise UserError(f"{where}: unknown setting {section}.{name}; known: {', '.join(field_names(cls))}")
    label = f"--set {section}.{name}" if from_text else f"{where} {section}.{name}"
    return coerce(value, typing.get_type_hints(cls)[name], label, from_text)


def resolve(preset: str, overrides: dict[str, dict[str, Any]] | None = None,
            where: str = "") -> tuple[ModelConfig, TrainConfig]:
    """Preset values, then overrides ({"model": {...}, "train": {...}}), type-checked and validated."""
    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    merged = {section: dict(PRESETS[preset].get(section, {})) for section in SECTIONS}
    for section, values in (overrides or {}).items():
        if section not in SECTIONS:
            raise UserError(f"{where or 'settings'}: unknown section {section!r}; use model or train")
        merged[section].update(values)
    prefix = f"{where} " if where else ""
    return (build_spec(ModelConfig, merged["model"], f"{prefix}model"),
            build_spec(TrainConfig, merged["train"], f"{prefix}train"))


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def model_config_from_dict(data: dict[str, Any], where: str = "model") -> ModelConfig:
    return build_spec(ModelConfig, data, where)


def train_config_from_dict(data: dict[str, Any], where: str = "train") -> TrainConfig:
    return build_spec(TrainConfig, data, where)
