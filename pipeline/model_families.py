"""One way to build a model from its spec, whatever its family; everything that trains or dumps uses it.

    gpt      pipeline/model.py, the built-in GPT-1-style transformer (the paper's models)
    hf       pipeline/hf_models.py, any causal LM of Hugging Face `transformers`, built from a config
    factory  pipeline/factory_models.py, `package.module:function` of the user's

Every model maps token ids [B, T] to next-token logits [B, T, V], has `.spec` (its ModelConfig) and
`.num_parameters()`; nothing else about it is assumed by the training loop, batching, the loss or the store.
A foreign (hf, factory) model is probed with one forward pass over a full window when it is built, so a
wrong output shape or a context the architecture cannot take fails in the first second, not mid-training.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from pipeline.config import ModelConfig
from pipeline.errors import UserError


class WrappedModel(nn.Module):
    """A foreign network behind the common interface: `net` is the architecture's own module."""

    def __init__(self, spec: ModelConfig, net: nn.Module):
        super().__init__()
        self.spec, self.net = spec, net

    def num_parameters(self) -> int:
        """Unique trainable parameters (a tied head is counted once)."""
        return sum(p.numel() for p in self.parameters())


def build_model(spec: ModelConfig, probe: bool = True) -> nn.Module:
    """The untrained model of `spec` (its vocabulary filled in), initialized from torch's current RNG."""
    if spec.vocab_size <= 0:
        raise ValueError("ModelConfig.vocab_size must be set (from the token store) before building a model")
    if spec.family == "gpt":
        from pipeline.model import GPT

        return GPT(spec)
    if spec.family == "hf":
        from pipeline.hf_models import build
    else:
        from pipeline.factory_models import build
    model = build(spec)
    if probe:
        probe_forward(model, spec)
    return model


def check_buildable(spec: ModelConfig, vocab_size: int) -> None:
    """Build and probe a foreign model now, at `vocab_size` (the store's, or its upper bound before the
    store exists), so a bad spec fails before any stage trains; torch's RNG is left as it was."""
    if spec.family == "gpt":
        return  # its spec's own validation covers it
    with torch.random.fork_rng():
        build_model(dataclasses.replace(spec, vocab_size=spec.vocab_size or vocab_size))


def probe_forward(model: nn.Module, spec: ModelConfig) -> None:
    """One forward pass over a window of `spec.context` ids: logits [1, context, V] or a one-line error."""
    ids = torch.zeros(1, spec.context, dtype=torch.long)
    was_training = model.training
    model.eval()  # no dropout draws: the probe leaves the RNG where initialization left it
    try:
        with torch.no_grad():
            logits = model(ids)
    except Exception as error:  # the architecture's own message, on one line
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise UserError(f"model {spec.architecture()}: a forward pass over one window of model.context={spec.context} "
                        f"tokens failed ({type(error).__name__}: {detail}); check model.context against what the "
                        f"architecture supports and model.options") from None
    finally:
        model.train(was_training)
    shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
    if shape != (1, spec.context, spec.vocab_size) or not logits.is_floating_point():
        raise UserError(f"model {spec.architecture()}: ids [1, {spec.context}] gave {shape}, not logits "
                        f"[1, {spec.context}, {spec.vocab_size}] over the token store's vocabulary; return one "
                        f"float score per vocabulary id at every position")
