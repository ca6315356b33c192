"""The hf family: any causal-LM architecture of Hugging Face `transformers`, built from a config.

Only `AutoModelForCausalLM.from_config` is used: the weights are initialized here (from torch's RNG, so a
seed reproduces them), never downloaded. The spec names `model_type` and that config's fields
(`model.options`); the vocabulary comes from the token store and pad/bos/eos point at `<eod>`, a valid id
of ours (transformers' defaults may lie outside a small vocabulary). The config's position limit
(`max_position_embeddings`, which gpt2 calls n_positions and rwkv context_length) is set to the spec's
context unless the spec sets it; a smaller one is refused.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch

from pipeline.config import ModelConfig
from pipeline.errors import UserError
from pipeline.model_families import WrappedModel
from pipeline.token_store import EOD, SPECIAL_TOKENS

EOD_ID = SPECIAL_TOKENS.index(EOD)
POSITION_LIMIT = "max_position_embeddings"
INSTALL = "pip install 'superstill[hf]' (or `make setup`)"


class HFCausalLM(WrappedModel):
    """ids [B, T] -> logits [B, T, V] through a transformers causal LM (`net`)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids=ids, use_cache=False).logits  # [B, T, V]


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UserError(f"model.family hf needs the transformers package: {INSTALL}") from None
    return transformers


def causal_lm_types() -> list[str]:
    """Every model_type `AutoModelForCausalLM` can build."""
    _transformers()
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def hf_config(spec: ModelConfig):
    """The architecture's config from the spec, every option checked against the config's own fields."""
    transformers = _transformers()
    known_types = causal_lm_types()
    if spec.model_type not in known_types:
        close = difflib.get_close_matches(spec.model_type, known_types, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "e.g. llama, rwkv, gpt2, mamba"
        raise UserError(f"model.model_type {spec.model_type!r} is not a causal-LM architecture of transformers "
                        f"{transformers.__version__}; {hint}")
    config_class = transformers.CONFIG_MAPPING[spec.model_type]
    fields = set(config_class().to_dict()) | set(config_class.attribute_map)
    unknown = sorted(set(spec.options) - fields)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(fields), n=3)
        raise UserError(f"model.options.{unknown[0]}: {spec.model_type} configs have no such field"
                        f"{' (did you mean ' + ', '.join(close) + '?)' if close else ''}; see transformers' "
                        f"{config_class.__name__}")
    # the limit under either of its names (gpt2's n_positions is an alias): the spec's value is never overridden
    named = [name for name in (POSITION_LIMIT, config_class.attribute_map.get(POSITION_LIMIT)) if name in spec.options]
    limit = spec.options[named[0]] if named else None
    if isinstance(limit, int) and limit < spec.context:
        raise UserError(f"model.context {spec.context} is longer than the {spec.model_type} model supports "
                        f"(model.options.{named[0]} = {limit}); lower model.context or raise the limit")
    settings: dict[str, Any] = dict(spec.options, vocab_size=spec.vocab_size, pad_token_id=EOD_ID,
                                    bos_token_id=EOD_ID, eos_token_id=EOD_ID)
    if limit is None and POSITION_LIMIT in fields:
        settings[POSITION_LIMIT] = spec.context
    try:
        return config_class(**settings)
    except Exception as error:  # configs validate with their own exception types (huggingface_hub's strict dataclasses)
        detail = " ".join(line.strip() for line in str(error).splitlines())[:240]  # their reason is on line 2
        raise UserError(f"model.options for {spec.model_type}: {detail or type(error).__name__}") from None


def build(spec: ModelConfig) -> HFCausalLM:
    from transformers import AutoModelForCausalLM

    config = hf_config(spec)
    try:
        net = AutoModelForCausalLM.from_config(config)
    except Exception as error:  # the architecture's own checks raise anything (rwkv: ZeroDivisionError at 1 layer)
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise UserError(f"model {spec.architecture()}: transformers could not build it from model.options "
                        f"({type(error).__name__}: {detail})") from None
    return HFCausalLM(spec, net)
