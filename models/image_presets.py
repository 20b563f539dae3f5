"""Preset kind "rgb": the classic ImageNet evaluation transform for colour photos.

Shorter side resized to `resize` (antialiased, like torchvision's `Resize(antialias=True)` on PIL
images), centre crop `size` (computed on the crop's box only: `resize_then_crop`), RGB in [0, 1]; `to_tensor` then applies the preset's mean/std. The
preset is stored in each manifest, so serving repeats exactly what the weights were evaluated with.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from models.imaging import decode_upright
from models.tta import TTA_KEY, tta_mode

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# TensorFlow's EfficientNet-Lite inputs are (pixel - 127) / 128, written here in [0, 1] units.
TF_LITE_MEAN = [127.0 / 255.0] * 3
TF_LITE_STD = [128.0 / 255.0] * 3
# Antialiasing filters only: Pillow samples a box by nearest neighbour on another grid than a full resize.
INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
# Each filter's half-width in output pixels (Pillow's `Resample.c`): how far past a box it reads the source.
FILTER_SUPPORT = {"bilinear": 1.0, "bicubic": 2.0, "lanczos": 3.0}


def rgb_preset(size: int, resize: int, mean: list[float], std: list[float], *,
               interpolation: str = "bilinear", tta: str | None = None) -> dict[str, Any]:
    """Preprocessing spec: shorter side to `resize`, centre crop `size` x `size`, normalise by mean/std;
    with `tta` (a `models.tta.TTA_MODES` name, e.g. "hflip"), predictions average those views."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; valid: {', '.join(INTERPOLATIONS)}")
    if resize < size:
        raise ValueError(f"resize ({resize}) must be at least the crop size ({size})")
    preset = {"kind": "rgb", "size": [size, size], "resize": resize, "interpolation": interpolation, "channels": 3,
              "mean": [float(m) for m in mean], "std": [float(s) for s in std]}
    return with_tta(preset, tta)


def with_tta(preset: dict[str, Any], tta: str | None) -> dict[str, Any]:
    """`preset` asking for test-time augmentation `tta` (a `models.tta.TTA_MODES` name; checked), or for none
    (None: the key removed). A new dict; `preset` is unchanged."""
    out = {k: v for k, v in preset.items() if k != TTA_KEY}
    if tta is not None:
        out[TTA_KEY] = tta_mode({TTA_KEY: tta})
    return out


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """The size torchvision's `Resize(shorter)` gives a `width` x `height` image (its rounding)."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def centre_crop_box(width: int, height: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """torchvision's `CenterCrop(size)` box (left, top, right, bottom), rounding the offsets its way."""
    crop_h, crop_w = size
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return left, top, left + crop_w, top + crop_h


def resize_then_crop(image: Image.Image, resize: int, size: tuple[int, int], interpolation: str) -> Image.Image:
    """Resize(resize) then CenterCrop(size), computed in the source's own coordinates: only the crop's
    columns are resampled across, and only the rows the vertical filter reads, so nothing the size of the
    full resize is made (that of a 5000x250 strip would be 5120x256 px). Two passes, across then down, in
    the order Pillow's full resize takes, so the pixels are those of the two-step transform (a single
    boxed resample goes down first, and the 8-bit rounding between its passes differs by up to 9 levels)."""
    width, height = image.size
    new_width, new_height = resized_size(width, height, resize)
    left, top, right, bottom = centre_crop_box(new_width, new_height, size)
    scale_x, scale_y = width / new_width, height / new_height
    reach = FILTER_SUPPORT[interpolation] * max(scale_y, 1.0) + 1  # source rows the filter reads past the box
    first, last = max(0, math.floor(top * scale_y - reach)), min(height, math.ceil(bottom * scale_y + reach))
    resample = INTERPOLATIONS[interpolation]
    rows = image.crop((0, first, width, last))
    across = rows.resize((right - left, last - first), resample, reducing_gap=None,
                         box=(left * scale_x, 0, right * scale_x, last - first))
    return across.resize((right - left, bottom - top), resample, reducing_gap=None,
                         box=(0, top * scale_y - first, right - left, bottom * scale_y - first))


def rgb_array(data: bytes, preset: dict[str, Any], *, max_pixels: int, declared_type: str | None = None) -> np.ndarray:
    """Preset kind "rgb": an H x W x 3 float32 array in [0, 1] (mean/std come later, in `to_tensor`)."""
    resize = int(preset["resize"])
    # JPEG draft: libjpeg decodes at 1/2..1/8 scale while both sides stay >= `resize`, so the
    # shorter side never has to be enlarged; a 640x480 photo decodes at full size, a 12 MP one at 1/4.
    rgb = decode_upright(data, mode="RGB", draft_size=(resize, resize), max_pixels=max_pixels,
                         declared_type=declared_type)
    cropped = resize_then_crop(rgb, resize, tuple(preset["size"]), preset.get("interpolation", "bilinear"))
    return np.asarray(cropped, dtype=np.float32) * (1.0 / 255.0)
