"""`pipeline evaluate`: perplexity of a checkpoint on a split of a token store."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.checkpoint import load_model, resolve_path
from pipeline.config import resolved_precision
from pipeline.distributed import DistContext, resolve_device
from pipeline.errors import UserError
from pipeline.evaluation import eval_span, perplexity
from pipeline.storage import atomic_write_text, check_apart
from pipeline.token_store import TokenStore


RESULT_KIND = "superstill.evaluation"
"""Marks a result file as this command's, so --force may replace it (and nothing else)."""


@dataclass
class EvaluateConfig:
    checkpoint: str
    """Checkpoint file or run directory."""
    tokens: str
    """Token store to evaluate on."""
    split: str = "val"
    """"val" or "train"."""
    fraction: float = 1.0
    """Leading fraction of the split to evaluate (the paper used the first 1% of its training data)."""
    max_tokens: int = 0
    """Cap on tokens evaluated (0 = none)."""
    context: int = 0
    """Window length (0 = the model's context)."""
    batch_size: int = 32
    device: str = "auto"
    out: str | None = None
    """JSON file for the result (default: evaluation-<split>.json beside the checkpoint)."""
    force: bool = False
    """Replace an existing result file (only one this command wrote)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fraction) and 0 < self.fraction <= 1):
            raise UserError(f"--fraction must be in (0, 1], got {self.fraction}")
        for option, value, low in (("--batch-size", self.batch_size, 1), ("--context", self.context, 0),
                                   ("--max-tokens", self.max_tokens, 0)):
            if value < low:
                raise UserError(f"{option} must be >= {low}, got {value}")


def _result_path(config: EvaluateConfig) -> Path:
    """Where the result goes; refused when it is an input, a directory, or a file this command did not write."""
    out = Path(config.out) if config.out else resolve_path(config.checkpoint).parent / f"evaluation-{config.split}.json"
    check_apart(out, {"--checkpoint": str(resolve_path(config.checkpoint)), "--tokens": config.tokens})
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name for the result JSON")
    if out.exists():
        if not config.force:
            raise UserError(f"--out {out} already exists; pass --force to replace it or choose another --out")
        try:
            ours = json.loads(out.read_text(encoding="utf-8")).get("kind") == RESULT_KIND
        except (ValueError, UnicodeDecodeError, AttributeError):
            ours = False
        if not ours:
            raise UserError(f"--out {out} is not an evaluation result written by `pipeline evaluate`; --force only "
                            f"replaces those: choose another --out")
    return out


def run(config: EvaluateConfig) -> dict[str, Any]:
    out = _result_path(config)  # before minutes of evaluation, not after
    tokens = TokenStore.open(config.tokens)
    model, payload = load_model(config.checkpoint)
    if model.spec.vocab_size != tokens.vocab_size:
        raise UserError(f"--checkpoint {config.checkpoint} has a {model.spec.vocab_size}-word vocabulary but "
                        f"--tokens {config.tokens} has {tokens.vocab_size}; evaluate on the store it was trained on")
    if payload["run"].get("token_fingerprint") not in (None, tokens.fingerprint):
        from pipeline.progress import log
        log(f"warning: --checkpoint was trained on other tokens (fingerprint {payload['run']['token_fingerprint'][:12]}) "
            f"than --tokens ({tokens.fingerprint[:12]}); ids only line up if the vocabularies are the same")
    context = config.context or model.spec.context
    if context > model.spec.context:
        raise UserError(f"--context {context} is longer than the model's context {model.spec.context}")
    device = resolve_device(config.device, DistContext())
    ids = tokens.read(config.split)
    ids = ids[:eval_span(ids.size, config.fraction, config.max_tokens)]
    amp = torch.bfloat16 if resolved_precision("auto", device.type) == "bf16" else None
    result = perplexity(model.to(device), ids, context, config.batch_size, device, amp, config.split)
    record = {"kind": RESULT_KIND, "checkpoint": str(resolve_path(config.checkpoint)), "tokens": tokens.location,
              "split": config.split,
              "fraction": config.fraction, "context": context, "tokens_evaluated": result.tokens,
              "mean_nll": result.nll, "perplexity": result.ppl, "position": payload["position"]}
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    record["written_to"] = str(out)
    return record
