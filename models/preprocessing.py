"""Preprocessing presets: how a raw image becomes the tensor a network was trained on.

A preset is a plain dict stored in each manifest under "preprocessing", so serving
applies exactly what training assumed. `normalize_digit` reproduces the way MNIST
itself was made, so photos and drawings look like MNIST digits to the network.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from models.imaging import load_oriented, open_image

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
DIGIT_BOX = 20  # MNIST fitted each digit's longest side into 20 px...
DIGIT_CANVAS = 28  # ...and centred its mass in a 28x28 field (measured: mean CoM 14.0, 14.0)
MIN_INK_CONTRAST = 0.08  # below this the image is treated as blank paper


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
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    if np.median(pixels) > 0.5:  # light paper, dark ink: flip to MNIST's white-on-black
        pixels = 1.0 - pixels
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
    background = sample <= np.percentile(sample, 50)  # ink is the minority: the darker half is paper
    design = np.stack([np.ones(background.sum()), ys[background], xs[background]], axis=1)
    coef, *_ = np.linalg.lstsq(design, sample[background], rcond=None)
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    plane = coef[0] + coef[1] * rows + coef[2] * cols
    return np.clip(pixels - plane, 0.0, 1.0)


def _otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of values in [0, 1] (256-bin histogram)."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    mass_low = np.cumsum(hist * centres)
    mean_low = mass_low / np.maximum(weight_low, 1e-12)
    mean_high = (mass_low[-1] - mass_low) / np.maximum(weight_high, 1e-12)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between))])


def _stretch_ink(ink: np.ndarray) -> np.ndarray | None:
    """Map the noise floor to 0 and typical stroke intensity to 1; None when there is no ink."""
    peak = float(np.percentile(ink, 99.9))
    if peak < MIN_INK_CONTRAST:
        return None
    threshold = _otsu_threshold(ink / peak) * peak
    strokes = ink[ink > threshold]
    if strokes.size == 0:
        return None
    low, high = threshold / 2, float(np.percentile(strokes, 75))
    if high - low < MIN_INK_CONTRAST / 2:
        return None
    return np.clip((ink - low) / (high - low), 0.0, 1.0)


def _ink_bounding_box(ink: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box of the ink, ignoring isolated specks and trimming stray far-off crumbs."""
    mask = Image.fromarray(((ink > 0.2) * 255).astype(np.uint8))
    if min(ink.shape) > 32:
        mask = mask.filter(ImageFilter.MedianFilter(3))  # drops salt noise, keeps strokes
    weights = np.asarray(mask, dtype=np.float32) * ink
    if weights.sum() == 0:
        weights = ink
    top, bottom = _mass_span(weights.sum(axis=1))
    left, right = _mass_span(weights.sum(axis=0))
    return top, bottom, left, right


def _mass_span(profile: np.ndarray, trim: float = 0.002) -> tuple[int, int]:
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
    resized = Image.fromarray(crop, mode="F").resize(new_size, Image.LANCZOS)
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
    if kind != "digit":
        raise ValueError(f"unknown preprocessing kind {kind!r}; valid: digit")
    image = open_image(data, max_pixels=max_pixels, declared_type=declared_type)
    # JPEG draft: decode at 1/2..1/8 scale but keep >= 256 px, ample for a 20 px digit box.
    gray = load_oriented(image, mode="L", draft_size=(256, 256))
    if preset.get("digit_normalization", True):
        return normalize_digit(gray)
    return resize_plain(gray, preset["size"][0])
