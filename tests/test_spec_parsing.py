"""The validation boundary: raw TOML/JSON values and --set text become typed specs, or one clear line."""

from dataclasses import dataclass, field

import pytest

from pipeline.config import ModelConfig, TrainConfig, parse_override, resolve
from pipeline.distillation import DistillationSpec
from pipeline.errors import UserError
from pipeline.spec_parsing import OPTIONS, build_spec, coerce, defaults


@dataclass
class Example:
    count: int
    ratio: float = 0.5
    flag: bool = False
    name: str = "x"
    pair: tuple[float, float] = (0.9, 0.98)
    values: list[float] = field(default_factory=lambda: [1.0])
    either: int | str = "all"
    maybe: str | None = None


def test_typed_values_pass_through_and_text_is_parsed_by_the_field_type():
    built = build_spec(Example, {"count": 3, "ratio": 1, "pair": [0.8, 0.9], "values": [1, 2.5], "either": 4}, "t")
    assert (built.count, built.ratio, built.pair, built.values, built.either) == (3, 1.0, (0.8, 0.9), [1.0, 2.5], 4)
    assert isinstance(built.ratio, float)
    text = build_spec(Example, {"count": "7", "ratio": "2e-3", "flag": "true", "pair": "0.1,0.2", "values": "1,2",
                                "either": "all", "maybe": "none", "name": "42"}, "t", from_text=True)
    assert (text.count, text.ratio, text.flag, text.pair, text.values, text.either, text.maybe, text.name) == \
        (7, 0.002, True, (0.1, 0.2), [1.0, 2.0], "all", None, "42")


@pytest.mark.parametrize("values, message", [
    ({"count": "3"}, 't.count: expected an integer, got "3" (a string); write 3 without quotes'),
    ({"count": 2.0}, "t.count: expected an integer, got 2.0 (a number); write 2"),
    ({"count": 2.5}, "t.count: expected an integer, got 2.5 (a number)"),
    ({"count": True}, "t.count: expected an integer, got True (a boolean)"),
    ({"count": 1, "ratio": "0.5"}, 't.ratio: expected a number, got "0.5" (a string); write 0.5 without quotes'),
    ({"count": 1, "ratio": float("nan")}, "t.ratio: expected a finite number, got nan"),
    ({"count": 1, "flag": 1}, "t.flag: expected true or false, got 1 (an integer)"),
    ({"count": 1, "pair": 0.9}, "t.pair: expected a list like [a, b], got 0.9 (a number)"),
    ({"count": 1, "pair": [0.9]}, "t.pair: expected 2 values, got 1"),
    ({"count": 1, "values": [1, "x"]}, 't.values[1]: expected a number, got "x" (a string)'),
    ({"count": 1, "name": 5}, "t.name: expected text"),
    ({"count": 1, "either": 2.5}, "t.either: expected an integer or text"),
    ({"count": 1, "extra": 1}, "t: unknown key(s) extra; known: count, ratio"),
    ({}, "t: missing key(s) count"),
])
def test_wrong_types_are_one_line_errors_naming_key_value_and_fix(values, message):
    with pytest.raises(UserError) as error:
        build_spec(Example, values, "t")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_table_and_option_naming():
    with pytest.raises(UserError, match=r"^demo.toml \[dump\] top_k: expected an integer"):
        coerce("8", int, "demo.toml [dump] top_k")
    with pytest.raises(UserError, match="^--transition-epoch must be an epoch number"):
        build_spec(DistillationSpec, {"transition_epoch": "soon"}, OPTIONS, from_text=True)
    with pytest.raises(UserError, match=r"^--w-data: expected a number, got \"lots\""):
        build_spec(DistillationSpec, {"w_data": "lots"}, OPTIONS, from_text=True)


def test_set_overrides_are_parsed_by_the_field_type():
    assert parse_override("train.lr=3e-4") == ("train", "lr", 3e-4)
    assert parse_override("model.n_layer=6") == ("model", "n_layer", 6)
    assert parse_override("train.betas=0.9,0.95") == ("train", "betas", (0.9, 0.95))
    assert parse_override("train.compile=false") == ("train", "compile", False)
    for text, message in [("train.epochs=two", "--set train.epochs: expected an integer"),
                          ("model.heads=2", "unknown setting model.heads"), ("lr=1", "expected model.FIELD=VALUE"),
                          ("train.betas=0.9", "expected 2 values")]:
        with pytest.raises(UserError, match=message):
            parse_override(text)


@pytest.mark.parametrize("overrides, message", [
    ({"train": {"lr": float("inf")}}, "train.lr: expected a finite number, got inf"),
    ({"train": {"lr": 0.0}}, "train.lr must be a positive number"),
    ({"train": {"device": "bogus"}}, "train.device 'bogus' is not a device"),
    ({"train": {"device": "cuda:x"}}, "is not a device"),
    ({"model": {"n_head": 5}}, "divisible"),
    ({"model": {"dropout": "0.1"}}, 'model.dropout: expected a number, got "0.1"'),
    ({"optim": {}}, "unknown section 'optim'"),
])
def test_resolve_checks_every_override(overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve("tiny-student", overrides)


def test_defaults_come_from_the_dataclass():
    assert defaults(DistillationSpec) == DistillationSpec().to_dict()  # every field, as constructed
    assert defaults(TrainConfig)["lr"] == TrainConfig().lr and "vocab_size" in defaults(ModelConfig)


@pytest.mark.parametrize("elapsed, expected", [(0.0, 0.6), (0.5, 0.6), (1.0, 0.6), (1.25, 0.45), (1.5, 0.3),
                                               (2.0, 0.0), (3.7, 0.0)])
def test_linear_schedule_weights_follow_the_closed_form(elapsed, expected):
    """w1(e) = w1 * clamp(1 - (e - start) / span, 0, 1) and w1 + w2 constant (start 1, span 1 epoch)."""
    spec = DistillationSpec(schedule="linear", decay_start=1.0, decay_epochs=1.0)
    w1, w2 = spec.weights(int(elapsed) + 1, elapsed)
    assert w1 == pytest.approx(expected) and w1 + w2 == pytest.approx(1.0)


def test_step_schedule_is_the_transition_epoch():
    spec = DistillationSpec(schedule="step", transition_epoch=2)
    assert [spec.weights(epoch, epoch - 1.0) for epoch in (1, 2, 3)] == [(0.6, 0.4), (0.6, 0.4), (0.0, 1.0)]
    assert [spec.phase(epoch, epoch - 1.0) for epoch in (1, 3)] == ["full", "off"]
    assert "through epoch 2" in spec.phase_reason("full") and "done" in spec.phase_reason("off")
    with pytest.raises(UserError, match="transition_epoch belongs to the step schedule"):
        DistillationSpec(schedule="linear", transition_epoch=1)
    with pytest.raises(UserError, match="decay_epochs must be"):
        DistillationSpec(schedule="linear", decay_epochs=0)


def test_options_whose_name_differs_from_the_field_are_named_as_typed():
    from pipeline.dump_spec import DumpSpec

    with pytest.raises(UserError, match=r"^--temperature: temperature 0.0 must be"):
        build_spec(DumpSpec, {"temperatures": [0.0]}, OPTIONS, options={"temperatures": "--temperature"})
