"""The hf family (pipeline/hf_models.py): configs built from model.options, the position limit honoured under
either of its names, and every mistake in a spec refused in one line before any run directory exists.
(Training, checkpoints, resume, compile, bf16 and DDP of hf models: tests/test_model_families.py.)"""

from __future__ import annotations

import pytest

from pipeline.config import ModelConfig
from pipeline.model_families import build_model
from tests.test_model_families import CONTEXT, SPECS, model_file, refused, store  # noqa: F401

LLAMA = SPECS["llama"]


def llama(**options) -> dict:
    return {**LLAMA, "options": {**LLAMA["options"], **options}}


@pytest.mark.parametrize("spec, expected", [
    ({**LLAMA, "model_type": "lama"}, "model.model_type 'lama' is not a causal-LM architecture"),
    ({**LLAMA, "model_type": "zzzqq"}, "e.g. llama, rwkv"),
    (llama(foo=1), "model.options.foo: llama configs have no such field; see transformers' LlamaConfig"),
    (llama(hiden_size=32), "model.options.hiden_size: llama configs have no such field (did you mean hidden_size"),
    (llama(max_position_embeddings=CONTEXT // 2),
     f"model.context {CONTEXT} is longer than the llama model supports (model.options.max_position_embeddings = 8)"),
    (llama(hidden_size="wide"), "model.options for llama: Validation error for field 'hidden_size': TypeError"),
    (llama(num_attention_heads=3), "hidden size (32) is not a multiple of the number of attention heads (3)"),
    ({**SPECS["rwkv"], "options": {**SPECS["rwkv"]["options"], "num_hidden_layers": 1}},
     "model hf:rwkv: transformers could not build it from model.options (ZeroDivisionError"),
    ({"family": "hf", "model_type": "gpt2", "context": CONTEXT, "options": {"n_embd": 32, "n_layer": 1, "n_head": 2,
                                                                            "n_positions": CONTEXT // 2}},
     f"model.context {CONTEXT} is longer than the gpt2 model supports (model.options.n_positions = 8)"),
    ({"family": "hf", "context": CONTEXT}, "model.family hf needs model.model_type"),
    ({**LLAMA, "factory": "my_models:build"}, "model.factory belongs to the factory family"),
])
def test_a_wrong_hf_spec_is_refused_in_one_line(store, tmp_path, spec, expected):  # noqa: F811
    line = refused(store, tmp_path / "run", "--model", model_file(tmp_path, spec))
    assert expected in line


def test_an_unknown_model_type_suggests_close_ones(store, tmp_path):  # noqa: F811
    line = refused(store, tmp_path / "run", "--set", "model.family=hf", "--set", "model.model_type=lama")
    assert "did you mean llama" in line


def spec(model_type: str, **options) -> ModelConfig:
    return ModelConfig(family="hf", model_type=model_type, vocab_size=50, context=CONTEXT, options=options)


def test_the_position_limit_is_the_context_unless_the_spec_sets_it():
    assert build_model(spec("llama", **LLAMA["options"])).net.config.max_position_embeddings == CONTEXT
    gpt2 = dict(n_embd=32, n_layer=1, n_head=2)
    assert build_model(spec("gpt2", **gpt2)).net.config.n_positions == CONTEXT
    # set under its alias, the spec's value stands (it was once overwritten by the context)
    assert build_model(spec("gpt2", **gpt2, n_positions=4 * CONTEXT)).net.config.n_positions == 4 * CONTEXT
    assert build_model(spec("llama", **LLAMA["options"], max_position_embeddings=2 * CONTEXT)
                       ).net.config.max_position_embeddings == 2 * CONTEXT


def test_the_vocabulary_and_special_ids_come_from_the_token_store():
    config = build_model(spec("llama", **LLAMA["options"])).net.config
    assert config.vocab_size == 50 and config.pad_token_id == config.bos_token_id == config.eos_token_id < 50
