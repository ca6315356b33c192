import pytest
import torch

from pipeline.config import ModelConfig, resolve
from pipeline.errors import UserError
from pipeline.model import GPT


def small_config(**changes) -> ModelConfig:
    values = dict(vocab_size=97, n_layer=2, n_head=2, d_model=32, d_ff=64, context=16, dropout=0.0)
    values.update(changes)
    return ModelConfig(**values)


def reference_parameter_count(c: ModelConfig) -> int:
    """Counted by hand from the architecture, independently of torch's modules."""
    linear = lambda fan_in, fan_out: fan_in * fan_out + fan_out  # weight + bias
    block = (linear(c.d_model, 3 * c.d_model) + linear(c.d_model, c.d_model)  # attention
             + linear(c.d_model, c.d_ff) + linear(c.d_ff, c.d_model)  # feed-forward
             + 2 * 2 * c.d_model)  # two layer norms (scale + shift)
    embeddings = c.vocab_size * c.d_model + c.context * c.d_model
    head = 0 if c.tie_embeddings else c.vocab_size * c.d_model
    return embeddings + c.n_layer * block + 2 * c.d_model + head


def test_logits_shape():
    model = GPT(small_config())
    ids = torch.randint(0, 97, (3, 16))
    assert model(ids).shape == (3, 16, 97)


def test_causality_future_tokens_never_change_earlier_logits():
    torch.manual_seed(0)
    model = GPT(small_config()).eval()
    ids = torch.randint(0, 97, (2, 16))
    changed = ids.clone()
    changed[:, 9:] = torch.randint(0, 97, (2, 7))
    before, after = model(ids), model(changed)
    torch.testing.assert_close(before[:, :9], after[:, :9])
    assert not torch.allclose(before[:, 9:], after[:, 9:])


def test_sequence_longer_than_context_is_refused():
    with pytest.raises(ValueError, match="exceeds the model's context"):
        GPT(small_config())(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("tie", [True, False])
def test_parameter_count_matches_hand_count(tie):
    config = small_config(tie_embeddings=tie)
    assert GPT(config).num_parameters() == reference_parameter_count(config)


def test_paper_large_student_is_161m_parameters():
    model_config, train_config = resolve("paper-large-student")
    model_config.vocab_size = 50_000
    count = reference_parameter_count(model_config)  # building the 162M model just to count is slow on CI
    assert abs(count - 161e6) / 161e6 < 0.02
    assert not model_config.tie_embeddings and model_config.n_layer == 12 and model_config.context == 512
    assert train_config.batch_size == 32


def test_paper_presets_match_the_paper():
    for name, layers, context, batch in [("paper-small-teacher", 2, 256, 16), ("paper-small-student", 4, 256, 16),
                                         ("paper-large-teacher", 4, 512, 32), ("paper-large-student", 12, 512, 32)]:
        model, train = resolve(name)
        assert (model.n_layer, model.context, train.batch_size) == (layers, context, batch)
        assert (model.d_model, model.d_ff, model.n_head) == (768, 3072, 12)
        assert (train.lr, train.betas, train.eps) == (3e-4, (0.9, 0.98), 1e-8)


def test_tiny_presets_keep_the_paper_layer_ratio():
    teacher, _ = resolve("tiny-teacher")
    student, _ = resolve("tiny-student")
    assert student.n_layer == 2 * teacher.n_layer


def test_config_validation_is_one_line():
    with pytest.raises(UserError, match="divisible"):
        small_config(d_model=30, n_head=4)
    with pytest.raises(UserError, match=r"model: unknown key\(s\) layers"):
        resolve("tiny-student", {"model": {"layers": 3}})
