"""Torchvision's ImageNet classifiers as registry architectures: `{"name": "torchvision", "args": {"model": ...}}`.

Only the structure is built here (`weights=None`): weights always come from the registry's
safetensors, never from a download. `training.imagenet_sources` converts torchvision's published
weights into a registry version.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torchvision
from torch import nn


@cache
def torchvision_classifiers() -> tuple[str, ...]:
    """Names of torchvision's ImageNet classification builders (alexnet, resnet18, ...)."""
    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def build_torchvision(model: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Torchvision classifier `model` (e.g. "alexnet") with builder keyword arguments `kwargs`, randomly initialised."""
    if model not in torchvision_classifiers():
        from models.networks import UnknownArchitectureError  # late: that module imports this one

        raise UnknownArchitectureError(
            f"unknown torchvision classifier {model!r}; valid: {', '.join(torchvision_classifiers())}")
    return torchvision.models.get_model(model, weights=None, **(kwargs or {}))
