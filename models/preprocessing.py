"""Preprocessing presets: how a raw image becomes the tensor a network was trained on.

A preset is a plain dict stored in each manifest under "preprocessing", so serving
applies exactly what training assumed. `normalize_digit` reproduces the way MNIST
itself was made, so photos and drawings look like MNIST digits to the network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from models.image_presets import rgb_array
from models.imaging import load_oriented, open_image

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
DIGIT_BOX = 20  # MNIST fitted each digit's longest side into 20 px...
DIGIT_CANVAS = 28  # ...and centred its mass in a 28x28 field (measured: mean CoM 14.0, 14.0)
MIN_INK_CONTRAST = 0.08  # below this the image is treated as blank paper
ANALYSIS_SIZE = 320  # longest side a photo is reduced to before normalising


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


def normalize_digit(image: Image.Image) -> np.ndarray:
    """Turn a grayscale photo or drawing of one digit into a 28x28 MNIST-style array in [0, 1].

    Steps (as MNIST was made): ink made bright on a dark background, uneven lighting
    removed, contrast stretched, cropped to the ink's (noise-robust) bounding box, the
    longest side fitted to 20 px keeping aspect, and placed so its centre of mass is
    at the centre of a 28x28 field. A 28x28 MNIST image comes out essentially unchanged.
    `image` must already be mode "L" (see `models.imaging.load_oriented`).
    """
    if image.mode != "L":
        raise ValueError(f"normalize_digit expects a mode 'L' image, got {image.mode!r}")
    if max(image.size) > ANALYSIS_SIZE:  # a 20 px target needs no more; keeps a photo at ~1 ms
        image = image.copy()
        image.thumbnail((ANALYSIS_SIZE, ANALYSIS_SIZE), Image.BILINEAR, reducing_gap=2.0)
    raw = np.asarray(image)
    pixels = raw.astype(np.float32) * (1.0 / 255.0)
    if _percentile_bin(np.bincount(raw.ravel(), minlength=256), 0.5) > 127:
        pixels = 1.0 - pixels  # light paper, dark ink: flip to MNIST's white-on-black
    ink = _stretch_ink(_remove_background(pixels))
    if ink is None:
        return np.zeros((DIGIT_CANVAS, DIGIT_CANVAS), dtype=np.float32)
    top, bottom, left, right = _ink_bounding_box(ink)
    fitted = _fit_longest_side(ink[top:bottom, left:right], DIGIT_BOX)
    return _place_by_centre_of_mass(fitted, DIGIT_CANVAS)


def resize_plain(image: Image.Image, size: int = DIGIT_CANVAS) -> np.ndarray:
    """The naive alternative (a plain resize), kept for comparisons: `digit_normalization` off."""
    return np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0


def _remove_background(pixels: np.ndarray) -> np.ndarray:
    """Subtract a fitted plane from the background so a lighting gradient does not look like ink."""
    height, width = pixels.shape
    if height * width <= 32 * 32:
        return np.clip(pixels - np.median(pixels), 0.0, 1.0)
    step = max(1, int(np.sqrt(height * width / 4096)))  # fit on ~4k samples
    sample = pixels[::step, ::step]
    ys, xs = np.mgrid[0:height:step, 0:width:step]
    background = sample <= np.partition(sample.ravel(), sample.size // 2)[sample.size // 2]  # ink is the minority
    design = np.stack([np.ones(background.sum()), ys[background], xs[background]], axis=1)
    coef, *_ = np.linalg.lstsq(design, sample[background], rcond=None)
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    plane = (coef[0] + coef[1] * rows + coef[2] * cols).astype(np.float32)
    return np.clip(pixels - plane, 0.0, 1.0)


def _otsu_threshold(hist: np.ndarray) -> int:
    """Otsu's threshold (a bin index) of a 256-bin histogram."""
    hist = hist.astype(np.float64)
    levels = np.arange(hist.size, dtype=np.float64)
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    mass_low = np.cumsum(hist * levels)
    mean_low = mass_low / np.maximum(weight_low, 1e-12)
    mean_high = (mass_low[-1] - mass_low) / np.maximum(weight_high, 1e-12)
    return int(np.argmax(weight_low * weight_high * (mean_low - mean_high) ** 2))


def _percentile_bin(hist: np.ndarray, fraction: float) -> int:
    cumulative = np.cumsum(hist)
    return int(np.searchsorted(cumulative, fraction * cumulative[-1], side="left"))


def _stretch_ink(ink: np.ndarray) -> np.ndarray | None:
    """Map the noise floor to 0 and typical stroke intensity to 1; None when there is no ink.

    All statistics come from one 256-bin histogram (cheap on a full photo).
    """
    hist = np.bincount((ink * 255.0).astype(np.uint8).ravel(), minlength=256)
    peak = _percentile_bin(hist, 0.999)
    if peak < MIN_INK_CONTRAST * 255:
        return None
    threshold = _otsu_threshold(hist[: peak + 1])
    strokes = hist[threshold + 1 :]
    if strokes.sum() == 0:
        return None
    low = threshold / 2 / 255.0
    high = (threshold + 1 + _percentile_bin(strokes, 0.75)) / 255.0
    if high - low < MIN_INK_CONTRAST / 2:
        return None
    return np.clip((ink - low) * (1.0 / (high - low)), 0.0, 1.0)


def _ink_bounding_box(ink: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (top, bottom, left, right) of the ink, ignoring specks and stray far-off crumbs."""
    weights, factor, trim = (ink > 0).astype(np.float32), 1, 0.0
    if min(ink.shape) > 32:
        # Average 2x2 blocks of the ink mask and keep blocks at least half inked: isolated
        # noise pixels vanish, strokes (>= 2 px wide at this scale) survive.
        mask = Image.fromarray(((ink > 0.2) * 255).astype(np.uint8)).reduce(2)
        blocks = np.asarray(mask) >= 128
        if blocks.any():
            weights, factor, trim = blocks.astype(np.float32), 2, 0.002
    top, bottom = _mass_span(weights.sum(axis=1), trim)
    left, right = _mass_span(weights.sum(axis=0), trim)
    height, width = ink.shape
    return top * factor, min(bottom * factor, height), left * factor, min(right * factor, width)


def _mass_span(profile: np.ndarray, trim: float) -> tuple[int, int]:
    """Smallest [start, stop) span of a 1-D mass profile, trimming `trim` of the mass at each end."""
    cumulative = np.cumsum(profile)
    total = cumulative[-1]
    start = int(np.searchsorted(cumulative, total * trim, side="right"))
    stop = int(np.searchsorted(cumulative, total * (1 - trim), side="left")) + 1
    return start, max(stop, start + 1)


def _fit_longest_side(crop: np.ndarray, box: int) -> np.ndarray:
    height, width = crop.shape
    scale = box / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(np.ascontiguousarray(crop, dtype=np.float32), mode="F").resize(new_size, Image.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _place_by_centre_of_mass(digit: np.ndarray, canvas_size: int) -> np.ndarray:
    height, width = digit.shape
    mass = digit.sum()
    ys, xs = np.mgrid[0:height, 0:width]
    com_y = (digit * ys).sum() / mass if mass > 0 else (height - 1) / 2
    com_x = (digit * xs).sum() / mass if mass > 0 else (width - 1) / 2
    centre = canvas_size / 2
    top = int(np.clip(round(centre - com_y), 0, canvas_size - height))
    left = int(np.clip(round(centre - com_x), 0, canvas_size - width))
    canvas = np.zeros((canvas_size, canvas_size), dtype=np.float32)
    canvas[top : top + height, left : left + width] = digit
    return canvas


def to_tensor(arrays: list[np.ndarray], preset: dict[str, Any]) -> torch.Tensor:
    """Stack HxW (or HxWxC) arrays in [0, 1] into an NCHW float tensor normalised per `preset`."""
    batch = torch.from_numpy(np.stack(arrays).astype(np.float32, copy=False))
    if batch.ndim == 3:
        batch = batch.unsqueeze(1)
    else:
        batch = batch.permute(0, 3, 1, 2)
    mean = torch.tensor(preset["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(preset["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return (batch - mean) / std


def image_to_array(data: bytes, preset: dict[str, Any], *, max_pixels: int, declared_type: str | None = None) -> np.ndarray:
    """Decode uploaded bytes and apply `preset`: the array a network of that preset expects (before mean/std).

    Raises `models.imaging.ImageError` subclasses for bytes that are not an acceptable image.
    """
    kind = preset.get("kind")
    if kind not in ARRAY_BUILDERS:
        raise ValueError(f"unknown preprocessing kind {kind!r}; valid: {', '.join(sorted(ARRAY_BUILDERS))}")
    image = open_image(data, max_pixels=max_pixels, declared_type=declared_type)
    return ARRAY_BUILDERS[kind](image, preset)


def digit_array(image: Image.Image, preset: dict[str, Any]) -> np.ndarray:
    """Preset kind "digit": 28x28 grayscale, MNIST-normalised unless `digit_normalization` is off."""
    # JPEG draft: decode at 1/2..1/8 scale but keep >= 224 px, ample for a 20 px digit box.
    gray = load_oriented(image, mode="L", draft_size=(224, 224))
    if preset.get("digit_normalization", True):
        return normalize_digit(gray)
    return resize_plain(gray, preset["size"][0])


# preset kind -> builder(opened image, preset) -> HxW or HxWxC float array in [0, 1]
ARRAY_BUILDERS: dict[str, Callable[[Image.Image, dict[str, Any]], np.ndarray]] = {
    "digit": digit_array,
    "rgb": rgb_array,  # colour photos: resize, centre crop (models/image_presets.py)
}


def example_input(preset: dict[str, Any]) -> torch.Tensor:
    """A batch of one zero input in the shape a network of `preset` takes (for layer summaries)."""
    height, width = preset["size"]
    return torch.zeros(1, preset.get("channels", 1), height, width)
