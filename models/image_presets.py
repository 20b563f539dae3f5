"""Preset kind "rgb": the classic ImageNet evaluation transform for colour photos.

Shorter side resized to `resize` (antialiased, like torchvision's `Resize(antialias=True)` on PIL
images), centre crop `size`, RGB in [0, 1]; `to_tensor` then applies the preset's mean/std. The
preset is stored in each manifest, so serving repeats exactly what the weights were evaluated with.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from models.imaging import decode_upright

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# TensorFlow's EfficientNet-Lite inputs are (pixel - 127) / 128, written here in [0, 1] units.
TF_LITE_MEAN = [127.0 / 255.0] * 3
TF_LITE_STD = [128.0 / 255.0] * 3
INTERPOLATIONS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                  "lanczos": Image.LANCZOS}


def rgb_preset(size: int, resize: int, mean: list[float], std: list[float], *,
               interpolation: str = "bilinear") -> dict[str, Any]:
    """Preprocessing spec: shorter side to `resize`, centre crop `size` x `size`, normalise by mean/std."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; valid: {', '.join(INTERPOLATIONS)}")
    if resize < size:
        raise ValueError(f"resize ({resize}) must be at least the crop size ({size})")
    return {"kind": "rgb", "size": [size, size], "resize": resize, "interpolation": interpolation, "channels": 3,
            "mean": [float(m) for m in mean], "std": [float(s) for s in std]}


def resize_shorter_side(image: Image.Image, shorter: int, interpolation: str) -> Image.Image:
    """Scale so the shorter side is `shorter` px (torchvision's `Resize(int)` size rule)."""
    width, height = image.size
    if min(width, height) == shorter:
        return image
    if width <= height:
        new_size = (shorter, int(shorter * height / width))
    else:
        new_size = (int(shorter * width / height), shorter)
    return image.resize(new_size, INTERPOLATIONS[interpolation], reducing_gap=None)


def centre_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """torchvision's `CenterCrop` (rounding the offsets the same way)."""
    width, height = image.size
    crop_h, crop_w = size
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return image.crop((left, top, left + crop_w, top + crop_h))


def rgb_array(data: bytes, preset: dict[str, Any], *, max_pixels: int, declared_type: str | None = None) -> np.ndarray:
    """Preset kind "rgb": an H x W x 3 float32 array in [0, 1] (mean/std come later, in `to_tensor`)."""
    resize = int(preset["resize"])
    # JPEG draft: libjpeg decodes at 1/2..1/8 scale while both sides stay >= `resize`, so the
    # shorter side never has to be enlarged; a 640x480 photo decodes at full size, a 12 MP one at 1/4.
    rgb = decode_upright(data, mode="RGB", draft_size=(resize, resize), max_pixels=max_pixels,
                         declared_type=declared_type)
    resized = resize_shorter_side(rgb, resize, preset.get("interpolation", "bilinear"))
    cropped = centre_crop(resized, tuple(preset["size"]))
    return np.asarray(cropped, dtype=np.float32) * (1.0 / 255.0)
