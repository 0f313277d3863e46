"""Model registry: `--model NAME` -> a constructor taking (in_channels, num_outputs).

Adding an architecture is one `@register("name")` entry. No model here keeps data-carrying
normalisation buffers (BatchNorm running statistics): they would reach the server outside
the clipped update (docs/privacy.md). GroupNorm is used instead.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

ModelFactory = Callable[[int, int], nn.Module]
# Models that output a mask per pixel; every other model outputs one score vector per image.
SEGMENTATION_MODELS = frozenset({"unet", "unet_small"})
MODELS: dict[str, ModelFactory] = {}


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
    def add(factory: ModelFactory) -> ModelFactory:
        MODELS[name] = factory
        return factory
    return add


def build_model(name: str, in_channels: int, num_outputs: int) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown --model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    return MODELS[name](in_channels, num_outputs)


from nets import paper, resnet, small  # noqa: E402,F401  (registers the built-in models)
