"""The one validation boundary: raw values (TOML tables, `--set` text, JSON) -> typed dataclass specs.

Every setting a user can write goes through `build_spec(cls, values, where)`: unknown keys, missing keys
and values of the wrong type become one `UserError` line naming the key, the bad value and the fix, e.g.

    experiment demo.toml [teacher] train.epochs: expected an integer, got "3" (a string); write 3

Types come from the dataclass's annotations (int, float, bool, str, tuple[float, float], list[float],
dict, and unions such as `int | str` or `str | None`), so each field's type is written once, on the
field. Range checks stay in each spec's `__post_init__`; a `UserError` from there is prefixed with
`where` too. Text from the command line (`--set train.lr=3e-4`) is parsed by the field's type, so
`--set model.n_layer=6` is an int and `--set train.device=0` a string.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from pipeline.errors import UserError

_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def build_spec(cls, values: dict[str, Any], where: str, *, from_text: bool = False,
               options: dict[str, str] | None = None):
    """An instance of dataclass `cls` from `values`, every field type-checked (see the module docstring).
    `options` names the command-line option of a field whose option is not `--field-name` (with OPTIONS)."""
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected a table of settings, got {_shown(values)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    missing = [name for name, f in fields.items() if name not in values and _required(f)]
    if missing:
        raise UserError(f"{where}: missing key(s) {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    named = {name: (options or {}).get(name) or key_name(where, name) for name in values}
    typed = {name: coerce(value, hints[name], named[name], from_text) for name, value in values.items()}
    try:
        return cls(**typed)
    except UserError as error:
        message = str(error)  # range checks name their own field ("train.lr ..."); add where they came from
        if where == OPTIONS:  # "tail must be ..." -> "--tail must be ..."
            field = next((name for name in fields if message.startswith((f"{name} ", f"{name}:"))), None)
            label = (options or {}).get(field) or key_name(where, field) if field else ""
            raise UserError(label + message[len(field):] if field else message) from None
        if message.startswith(where.split()[-1]):
            raise
        raise UserError(f"{where}: {message}") from None


OPTIONS = "--"
"""`where` for values from command-line options: keys are named as options (`--transition-epoch`)."""


def key_name(where: str, name: str) -> str:
    """How a key is named in messages: `train.lr` for a section, `demo.toml [dump] top_k` for a TOML table,
    `--top-k` for command-line options."""
    if where == OPTIONS:
        return f"--{name.replace('_', '-')}"
    return f"{where} {name}" if where.endswith("]") else f"{where}.{name}"


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def defaults(cls) -> dict[str, Any]:
    """Each field's default (for click options and docs: the dataclass is the one place defaults live)."""
    result = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            result[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            result[f.name] = f.default_factory()
    return result


def coerce(value: Any, annotation: Any, where: str, from_text: bool = False) -> Any:
    """`value` as type `annotation`, or a UserError naming `where`. Text is parsed when `from_text`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(annotation), where, from_text)
    if annotation is Any:
        return value
    if annotation is bool:
        return _coerce_bool(value, where, from_text)
    if annotation is int:
        return _coerce_int(value, where, from_text)
    if annotation is float:
        return _coerce_float(value, where, from_text)
    if annotation is str:
        return _expect(value, str, "text", where, '"..."')
    if origin in (tuple, list) or annotation in (tuple, list):
        return _coerce_sequence(value, origin or annotation, typing.get_args(annotation), where, from_text)
    if origin is dict or annotation is dict:
        return dict(_expect(value, dict, "a table", where, "{...}"))
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise TypeError(f"{where}: no coercion to {annotation!r}")  # a spec with an unsupported field type: a bug


def _coerce_union(value: Any, members: tuple, where: str, from_text: bool) -> Any:
    if type(None) in members and (value is None or (from_text and str(value).strip().lower() in ("none", ""))):
        return None
    errors = []
    for member in (m for m in members if m is not type(None)):
        try:
            return coerce(value, member, where, from_text)
        except UserError as error:
            errors.append(str(error).split(": expected ", 1)[-1].split(", got")[0])
    raise UserError(f"{where}: expected {' or '.join(errors)}, got {_shown(value)}")


def _coerce_bool(value: Any, where: str, from_text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if from_text and isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise UserError(f"{where}: expected true or false, got {_shown(value)}")


def _coerce_int(value: Any, where: str, from_text: bool) -> int:
    if from_text and isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""))
        except ValueError:
            pass
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    hint = f"; write {int(value)}" if isinstance(value, float) and value.is_integer() else ""
    hint = hint or (f"; write {value.strip()} without quotes" if isinstance(value, str) and
                    value.strip().lstrip("-").isdigit() else "")
    raise UserError(f"{where}: expected an integer, got {_shown(value)}{hint}")


def _coerce_float(value: Any, where: str, from_text: bool) -> float:
    number = value
    if from_text and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        hint = f"; write {value.strip()} without quotes" if isinstance(value, str) and _is_number(value) else ""
        raise UserError(f"{where}: expected a number, got {_shown(value)}{hint}")
    if not math.isfinite(number):
        raise UserError(f"{where}: expected a finite number, got {number}")
    return float(number)


def _coerce_sequence(value: Any, origin: type, args: tuple, where: str, from_text: bool) -> Any:
    if from_text and isinstance(value, str):
        value = [part for part in value.strip().strip("[]()").split(",") if part.strip()]
    if not isinstance(value, (list, tuple)):
        example = "[a, b]" if origin is tuple else "[a, b, ...]"
        raise UserError(f"{where}: expected a list like {example}, got {_shown(value)}")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise UserError(f"{where}: expected {len(args)} values, got {len(value)} ({_shown(value)})")
        return tuple(coerce(v, a, f"{where}[{i}]", from_text) for i, (v, a) in enumerate(zip(value, args)))
    item = args[0] if args else Any
    items = [coerce(v, item, f"{where}[{i}]", from_text) for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _expect(value: Any, kind: type, name: str, where: str, example: str) -> Any:
    if not isinstance(value, kind):
        raise UserError(f"{where}: expected {name} like {example}, got {_shown(value)}")
    return value


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _shown(value: Any) -> str:
    """The value as the user wrote it, with its type: `"3" (a string)`, `2.5 (a number)`."""
    kinds = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "a list",
             tuple: "a list", dict: "a table"}
    text = f'"{value}"' if isinstance(value, str) else repr(value)
    return f"{text[:60]} ({kinds.get(type(value), type(value).__name__)})"
