"""Typed configs for models and training, validated on construction, round-tripping through dicts.

Presets are plain data (`PRESETS`): a preset fills a `ModelConfig` and a `TrainConfig`, and any field
can then be overridden from the CLI (`--set model.n_layer=6`) or a TOML file. The resolved config is
saved next to every output.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
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


FAMILIES = ("gpt", "hf", "factory")
"""Model families (pipeline/model_families.py): the built-in GPT, any Hugging Face `transformers` causal LM,
or a user's own function."""
GPT_FIELDS = ("n_layer", "n_head", "d_model", "d_ff", "dropout", "tie_embeddings", "bias")
"""ModelConfig fields that only the gpt family reads (hf and factory models take `options`)."""
FAMILY_FIELDS = {"hf": ("model_type", "options"), "factory": ("factory", "options"), "gpt": GPT_FIELDS}
"""The fields each family reads besides family, vocab_size and context (what its spec records)."""


@dataclass
class ModelConfig:
    """The model: a family and that family's settings (the gpt family's are the GPT-1-style fields)."""

    family: str = "gpt"
    """"gpt" (the built-in GPT-1-style transformer), "hf" (a `transformers` architecture, built from a config,
    never downloaded) or "factory" (`package.module:function` of the user's, see `factory`)."""
    vocab_size: int = 0
    """Output classes; 0 means "take it from the token store"."""
    n_layer: int = 2
    """gpt: transformer blocks."""
    n_head: int = 12
    """gpt: attention heads; must divide d_model."""
    d_model: int = 768
    """gpt: width of the residual stream."""
    d_ff: int = 3072
    """gpt: hidden width of each feed-forward block."""
    context: int = 256
    """Window length the model trains and is evaluated on (every family; gpt: its learned positions)."""
    dropout: float = 0.1
    """gpt: dropout on embeddings, attention weights and residual branches (GPT-1 used 0.1)."""
    tie_embeddings: bool = True
    """gpt: share the input embedding with the output head (the paper's large student is untied)."""
    bias: bool = True
    """gpt: biases in linear layers and layer norms, as in GPT-1."""
    model_type: str = ""
    """hf: the `transformers` model type, e.g. "llama", "rwkv", "gpt2", "mamba"."""
    factory: str = ""
    """factory: "package.module:function", importable from the Python path (or the working directory),
    called as function(vocab_size=V, **options) and returning a module mapping ids [B, T] to logits [B, T, V]."""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """hf: fields of the architecture's config (hidden_size, num_hidden_layers, ...); factory: keyword arguments.
    Numbers, booleans, text and lists of them only (a checkpoint stores them as data)."""

    def __post_init__(self) -> None:
        _check(self.family in FAMILIES, f"model.family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        _check(self.vocab_size >= 0, f"model.vocab_size must be >= 0, got {self.vocab_size}")
        _check(self.context > 0, f"model.context must be positive, got {self.context}")
        if self.family == "gpt":
            self._check_gpt()
        else:
            self._check_foreign()

    def _check_gpt(self) -> None:
        for name in ("n_layer", "n_head", "d_model", "d_ff"):
            _check(getattr(self, name) > 0, f"model.{name} must be positive, got {getattr(self, name)}")
        _check(self.d_model % self.n_head == 0,
               f"model.d_model ({self.d_model}) must be divisible by model.n_head ({self.n_head})")
        _check(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")
        for name in ("model_type", "factory", "options"):
            _check(not getattr(self, name), f"model.{name} belongs to the {'factory' if name == 'factory' else 'hf'} "
                                            f"family; set model.family too, or remove it")

    def _check_foreign(self) -> None:
        """hf and factory specs: their own fields set, the gpt-only fields left alone (they would be ignored)."""
        given = [name for name in GPT_FIELDS if getattr(self, name) != _GPT_DEFAULTS[name]]
        _check(not given, f"model.{', model.'.join(given)} only apply to the gpt family; a {self.family} model takes "
                          f"its settings from model.options (start from a {self.family} preset or --model FILE)")
        if self.family == "hf":
            _check(bool(self.model_type), "model.family hf needs model.model_type, e.g. llama, rwkv, gpt2")
            _check(not self.factory, "model.factory belongs to the factory family; remove it or set model.family=factory")
        else:
            _check(":" in self.factory, f"model.factory must be package.module:function, got {self.factory!r}")
            _check(not self.model_type, "model.model_type belongs to the hf family; remove it")
        for key, value in self.options.items():
            _check(_is_plain(value), f"model.options.{key}: {value!r} is not a number, boolean, text or list of them")
        _check("vocab_size" not in self.options, "model.options.vocab_size: the vocabulary comes from the token store "
                                                 "(model.vocab_size); remove it")

    def to_dict(self) -> dict[str, Any]:
        """The fields this family reads (what checkpoints, run.json and stores record)."""
        keep = ("family", "vocab_size", "context", *FAMILY_FIELDS[self.family])
        data = dataclasses.asdict(self)
        return {name: data[name] for name in field_names(ModelConfig) if name in keep}

    def architecture(self) -> str:
        """A short label for tables and legends: "gpt", "hf:llama", "factory:my_models:build"."""
        return architecture_label(self.to_dict())


def architecture_label(spec: dict[str, Any]) -> str:
    """The label of a recorded model spec (run.json "model"; no family means gpt, as older runs wrote)."""
    family = spec.get("family", "gpt")
    return {"hf": f"hf:{spec.get('model_type')}", "factory": f"factory:{spec.get('factory')}"}.get(family, family)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.default is not dataclasses.MISSING}
_GPT_DEFAULTS = {name: _DEFAULTS[name] for name in GPT_FIELDS}


def _is_plain(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_plain(item) for item in value)
    return isinstance(value, (bool, int, float, str))


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
_LLAMA = dict(tie_word_embeddings=True, attention_dropout=0.1)  # tied like the gpt students, GPT-1's dropout
_RWKV = dict(tie_word_embeddings=True)
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
    # Other architectures (family hf, pip install superstill[hf]), sized like the GPT students above: a
    # Llama-style transformer (RoPE, SwiGLU, RMSNorm; intermediate 2/3 of d_ff keeps the block's parameters)
    # and RWKV, attention-free and recurrent (its intermediate trimmed for the same reason).
    "tiny-llama-student": {"model": dict(family="hf", model_type="llama", context=64, options=dict(
        _LLAMA, hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4)),
        "train": dict(batch_size=32, lr=1e-3)},
    "tiny-rwkv-student": {"model": dict(family="hf", model_type="rwkv", context=64, options=dict(
        _RWKV, hidden_size=128, attention_hidden_size=128, intermediate_size=448, num_hidden_layers=2)),
        "train": dict(batch_size=32, lr=1e-3)},
    "paper-small-llama-student": {"model": dict(family="hf", model_type="llama", context=256, options=dict(
        _LLAMA, hidden_size=768, intermediate_size=2048, num_hidden_layers=4, num_attention_heads=12)),
        "train": dict(batch_size=16)},
    "paper-small-rwkv-student": {"model": dict(family="hf", model_type="rwkv", context=256, options=dict(
        _RWKV, hidden_size=768, attention_hidden_size=768, intermediate_size=2688, num_hidden_layers=4)),
        "train": dict(batch_size=16)},
}


SECTIONS = {"model": ModelConfig, "train": TrainConfig}


def parse_override(text: str) -> tuple[str, str, Any]:
    """`section.field=value` -> (section, field, value parsed by the field's type). `model.options.KEY=VALUE`
    gives ("model", "options", {KEY: value}), the value read as a TOML literal (3, 0.1, true, "text", [1, 2])
    or else as text."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or section not in SECTIONS:
        raise UserError(f"--set {text!r}: expected model.FIELD=VALUE, model.options.KEY=VALUE or train.FIELD=VALUE")
    if section == "model" and name.startswith("options."):
        option = name[len("options."):]
        if not option.isidentifier():
            raise UserError(f"--set {text!r}: {option!r} is not an option name; write model.options.NAME=VALUE")
        return section, "options", {option: _literal(raw.strip())}
    return section, name, typed_setting(section, name, raw.strip(), f"--set {text!r}", from_text=True)


def _literal(raw: str) -> Any:
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw


def merge_settings(into: dict[str, Any], values: dict[str, Any]) -> None:
    """Later settings win; model options merge key by key (so several --set model.options.X add up)."""
    for name, value in values.items():
        if name == "options" and isinstance(value, dict) and isinstance(into.get("options"), dict):
            into["options"] = {**into["options"], **value}
        else:
            into[name] = value


def typed_setting(section: str, name: str, value: Any, where: str, from_text: bool = False) -> Any:
    """One model/train setting, type-checked against its field as soon as it is read."""
    cls = SECTIONS[section]
    if name not in field_names(cls):
        raise UserError(f"{where}: unknown setting {section}.{name}; known: {', '.join(field_names(cls))}")
    label = f"--set {section}.{name}" if from_text else f"{where} {section}.{name}"
    return coerce(value, typing.get_type_hints(cls)[name], label, from_text)


def resolve(preset: str, overrides: dict[str, dict[str, Any]] | None = None,
            where: str = "") -> tuple[ModelConfig, TrainConfig]:
    """Preset values, then overrides ({"model": {...}, "train": {...}}), type-checked and validated.

    Overrides that change the model's family (or its model_type or factory) keep only the preset's context:
    the preset's other model settings describe another architecture."""
    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    merged = {section: copy.deepcopy(PRESETS[preset].get(section, {})) for section in SECTIONS}
    for section in overrides or {}:
        if section not in SECTIONS:
            raise UserError(f"{where or 'settings'}: unknown section {section!r}; use model or train")
    model_overrides = (overrides or {}).get("model", {})
    if any(name in model_overrides and model_overrides[name] != merged["model"].get(name, _DEFAULTS[name])
           for name in ("family", "model_type", "factory")):
        merged["model"] = {name: merged["model"][name] for name in ("context",) if name in merged["model"]}
    for section, values in (overrides or {}).items():
        merge_settings(merged[section], values)
    prefix = f"{where} " if where else ""
    return (build_spec(ModelConfig, merged["model"], f"{prefix}model"),
            build_spec(TrainConfig, merged["train"], f"{prefix}train"))


def to_dict(config: Any) -> dict[str, Any]:
    """A config as JSON-able data (a model spec: only the fields its family reads)."""
    return config.to_dict() if isinstance(config, ModelConfig) else dataclasses.asdict(config)


def model_config_from_dict(data: dict[str, Any], where: str = "model") -> ModelConfig:
    return build_spec(ModelConfig, data, where)


def train_config_from_dict(data: dict[str, Any], where: str = "train") -> TrainConfig:
    return build_spec(TrainConfig, data, where)
