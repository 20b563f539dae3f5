"""Preprocessing presets: how a raw image becomes the tensor a network was trained on.

A preset is a plain dict stored in each manifest under "preprocessing", so serving
applies exactly what training assumed; `image_to_array` dispatches on its "kind".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from models.digits import DIGIT_CANVAS, DRAFT_SIZE, normalize_digit, resize_plain
from models.image_presets import rgb_array
from models.imaging import decode_upright

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def digit_preset(*, digit_normalization: bool = True) -> dict[str, Any]:
    """The preprocessing spec of an MNIST-trained digit classifier."""
    return {
        "kind": "digit",
        "size": [DIGIT_CANVAS, DIGIT_CANVAS],
        "channels": 1,
        "mean": [MNIST_MEAN],
        "std": [MNIST_STD],
        "digit_normalization": digit_normalization,
        "ink": "white-on-black",
    }


def to_tensor(arrays: list[np.ndarray], preset: dict[str, Any]) -> torch.Tensor:
    """Stack HxW (or HxWxC) arrays in [0, 1] into an NCHW float tensor normalised per `preset`.

    The arithmetic is numpy's: on a serving-size batch, building torch tensors for the mean and
    std cost more than the normalisation itself.
    """
    batch = np.stack(arrays).astype(np.float32, copy=False)
    batch = batch[:, None] if batch.ndim == 3 else batch.transpose(0, 3, 1, 2)
    mean = np.asarray(preset["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    scale = 1.0 / np.asarray(preset["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return torch.from_numpy(np.ascontiguousarray((batch - mean) * scale))


def image_to_array(data: bytes, preset: dict[str, Any], *, max_pixels: int, declared_type: str | None = None) -> np.ndarray:
    """Decode uploaded bytes and apply `preset`: the array a network of that preset expects (before mean/std).

    Raises `models.imaging.ImageError` subclasses for bytes that are not an acceptable image.
    """
    kind = preset.get("kind")
    if kind not in ARRAY_BUILDERS:
        raise ValueError(f"unknown preprocessing kind {kind!r}; valid: {', '.join(sorted(ARRAY_BUILDERS))}")
    return ARRAY_BUILDERS[kind](data, preset, max_pixels=max_pixels, declared_type=declared_type)


def digit_array(data: bytes, preset: dict[str, Any], *, max_pixels: int, declared_type: str | None = None) -> np.ndarray:
    """Preset kind "digit": 28x28 grayscale, MNIST-normalised unless `digit_normalization` is off."""
    # JPEG draft: decode at 1/2..1/8 scale straight to about the analysis size.
    gray = decode_upright(data, mode="L", draft_size=(DRAFT_SIZE, DRAFT_SIZE), max_pixels=max_pixels,
                          declared_type=declared_type)
    if preset.get("digit_normalization", True):
        return normalize_digit(gray)
    return resize_plain(gray, preset["size"][0])


# preset kind -> builder(uploaded bytes, preset, max_pixels=, declared_type=) -> HxW or HxWxC float array in [0, 1]
ARRAY_BUILDERS: dict[str, Callable[..., np.ndarray]] = {
    "digit": digit_array,
    "rgb": rgb_array,  # colour photos: resize, centre crop (models/image_presets.py)
}


def example_input(preset: dict[str, Any]) -> torch.Tensor:
    """A batch of one zero input in the shape a network of `preset` takes (for layer summaries).

    Kind "chars" (word-completion models, `models.chars`): one sequence of 8 start-token ids.
    """
    if preset.get("kind") == "chars":
        return torch.full((1, 8), int(preset["start"]), dtype=torch.long)
    height, width = preset["size"]
    return torch.zeros(1, preset.get("channels", 1), height, width)
