"""The factory family: a user's own architecture, named `package.module:function` in the spec.

The function is called as function(vocab_size=V, **options) and returns an `nn.Module` mapping ids [B, T]
to logits [B, T, V]. The module is imported from the Python path, or else from the working directory (a
team's `my_models.py` beside its runs). Loading a checkpoint imports only the module its spec names.
"""

from __future__ import annotations

import importlib
import os
import sys

import torch
import torch.nn as nn

from pipeline.config import ModelConfig
from pipeline.errors import UserError
from pipeline.model_families import WrappedModel


class FactoryModel(WrappedModel):
    """ids [B, T] -> logits [B, T, V] through the user's module (`net`)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.net(ids)


def _import(module_name: str, factory: str):
    importlib.invalidate_caches()  # a module written after the last import attempt
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name.split(".")[0] and error.name != module_name:
            raise UserError(f"model.factory {factory}: importing {module_name} failed: {error}") from None
    except Exception as error:  # the user's module raised while importing
        raise UserError(f"model.factory {factory}: importing {module_name} failed "
                        f"({type(error).__name__}: {str(error).splitlines()[0][:160]})") from None
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # the working directory, last: never shadows an installed package
        return _import(module_name, factory)
    raise UserError(f"model.factory {factory}: no module {module_name!r} on the Python path or in the working "
                    f"directory; add its folder to PYTHONPATH")


def build(spec: ModelConfig) -> FactoryModel:
    module_name, _, function_name = spec.factory.partition(":")
    function = getattr(_import(module_name, spec.factory), function_name, None)
    if not callable(function):
        raise UserError(f"model.factory {spec.factory}: {module_name} has no function {function_name!r}")
    try:
        net = function(vocab_size=spec.vocab_size, **spec.options)
    except (TypeError, ValueError) as error:  # wrong keywords, or values the factory validates and refuses
        raise UserError(f"model.factory {spec.factory} refused its arguments ({str(error).splitlines()[0][:200]}); "
                        f"check model.options") from None
    if not isinstance(net, nn.Module):
        raise UserError(f"model.factory {spec.factory} returned {type(net).__name__}, not a torch.nn.Module")
    return FactoryModel(spec, net)
