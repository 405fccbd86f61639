"""Model names -> builders, and `create_model` with argument errors that name the bad argument."""
from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Class decorator: `@register_model('inception_v4')`. The constructor's signature is the model's knobs."""
    def add(cls):
        _MODELS[name] = cls
        return cls
    return add


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Builds a model by name, e.g. `create_model('inception_resnet_v2', variant='tf', residual_scale=0.2)`.

    `pretrained=True` loads timm's published ImageNet weights (`load_timm_weights`); it needs them in the local
    Hugging Face cache or network access, and exists only for the networks timm publishes.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    builder = _MODELS[name]
    params = inspect.signature(builder).parameters
    for key in kwargs:
        if key not in params:
            raise ValueError(f'{name}: unknown argument {key!r}; it accepts: {", ".join(params)}')
    model = builder(**kwargs)
    if pretrained:
        from .timm_weights import load_timm_weights
        load_timm_weights(model)
    return model
