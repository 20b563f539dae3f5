"""`normalize_digit`: a photo or drawing of one digit made to look the way MNIST itself was made."""

from __future__ import annotations

import numpy as np
from PIL import Image

DIGIT_BOX = 20  # MNIST fitted each digit's longest side into 20 px...
DIGIT_CANVAS = 28  # ...and centred its mass in a 28x28 field (measured: mean CoM 14.0, 14.0)
MIN_INK_CONTRAST = 0.08  # below this the image is treated as blank paper
ANALYSIS_SIZE = 160  # longest side a photo is reduced to: a 20 px target needs no more (bench: same accuracy as 320)
DRAFT_SIZE = 112  # JPEG draft decoding (DCT scaling 1/2..1/8) keeps at least this many pixels per side
_RAMP = np.arange(DIGIT_CANVAS, dtype=np.float32)


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
    if _already_mnist(raw):
        return raw.astype(np.float32) * (1.0 / 255.0)
    pixels = raw.astype(np.float32) * (1.0 / 255.0)
    median = _percentile_bin(np.bincount(raw.ravel(), minlength=256), 0.5) / 255.0
    if median > 0.5:  # light paper, dark ink: flip to MNIST's white-on-black
        pixels, median = 1.0 - pixels, 1.0 - median
    ink = _stretch_ink(_remove_background(pixels, median))
    if ink is None:
        return np.zeros((DIGIT_CANVAS, DIGIT_CANVAS), dtype=np.float32)
    top, bottom, left, right = _ink_bounding_box(ink)
    fitted = _fit_longest_side(ink[top:bottom, left:right], DIGIT_BOX)
    return _place_by_centre_of_mass(fitted, DIGIT_CANVAS)


def _already_mnist(raw: np.ndarray) -> bool:
    """True for a 28x28 white-on-black digit already fitted to ~20 px and mass-centred: MNIST as is.

    Such inputs (MNIST itself, or a client that normalises) skip the whole pipeline, which
    would only reproduce them up to resampling noise.
    """
    if raw.shape != (DIGIT_CANVAS, DIGIT_CANVAS):
        return False
    if max(raw[0].max(), raw[-1].max(), raw[:, 0].max(), raw[:, -1].max()) > 32:
        return False  # the border is not dark background
    rows, cols = raw.sum(axis=1, dtype=np.float32), raw.sum(axis=0, dtype=np.float32)
    mass = rows.sum()
    if mass == 0:
        return False
    inked_rows, inked_cols = np.flatnonzero(rows), np.flatnonzero(cols)
    extent = max(inked_rows[-1] - inked_rows[0], inked_cols[-1] - inked_cols[0]) + 1
    com_y, com_x = rows @ _RAMP / mass, cols @ _RAMP / mass
    return DIGIT_BOX - 2 <= extent <= DIGIT_BOX + 1 and abs(com_y - 14) <= 1 and abs(com_x - 14) <= 1


def resize_plain(image: Image.Image, size: int = DIGIT_CANVAS) -> np.ndarray:
    """The naive alternative (a plain resize), kept for comparisons: `digit_normalization` off."""
    return np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0


def _remove_background(pixels: np.ndarray, median: float) -> np.ndarray:
    """Subtract a plane fitted to the background so a lighting gradient does not look like ink.

    Background samples are those at or below the image's `median` (ink is the minority).
    The least-squares plane comes from the 3x3 normal equations: a few sums, no big solver.
    """
    height, width = pixels.shape
    if height * width <= 32 * 32:
        return _unit(pixels - median)
    step = max(1, int(np.sqrt(height * width / 4096)))  # fit on ~4k samples
    sample = pixels[::step, ::step]
    ys, xs = np.nonzero(sample <= median + 1e-6)
    values = sample[ys, xs]
    ys, xs = ys.astype(np.float64) * step, xs.astype(np.float64) * step
    normal = np.array([[len(values), ys.sum(), xs.sum()],
                       [ys.sum(), ys @ ys, ys @ xs],
                       [xs.sum(), xs @ ys, xs @ xs]])
    target = np.array([values.sum(), ys @ values, xs @ values])
    try:
        a0, ay, ax = np.linalg.solve(normal, target)
    except np.linalg.LinAlgError:  # degenerate sample (e.g. one row): a flat background
        return _unit(pixels - median)
    plane = (np.arange(height, dtype=np.float32)[:, None] * np.float32(ay)
             + np.arange(width, dtype=np.float32)[None, :] * np.float32(ax) + np.float32(a0))
    return _unit(pixels - plane)


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
    return _unit((ink - low) * (1.0 / (high - low)))


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
    resized = Image.fromarray(np.ascontiguousarray(crop, dtype=np.float32), mode="F").resize(new_size, Image.LANCZOS, reducing_gap=3.0)
    return _unit(np.array(resized, dtype=np.float32))


def _place_by_centre_of_mass(digit: np.ndarray, canvas_size: int) -> np.ndarray:
    height, width = digit.shape
    rows, cols = digit.sum(axis=1), digit.sum(axis=0)
    mass = float(rows.sum())
    com_y = float(rows @ np.arange(height, dtype=np.float32)) / mass if mass > 0 else (height - 1) / 2
    com_x = float(cols @ np.arange(width, dtype=np.float32)) / mass if mass > 0 else (width - 1) / 2
    centre = canvas_size / 2
    top = min(max(round(centre - com_y), 0), canvas_size - height)
    left = min(max(round(centre - com_x), 0), canvas_size - width)
    canvas = np.zeros((canvas_size, canvas_size), dtype=np.float32)
    canvas[top : top + height, left : left + width] = digit
    return canvas


def _unit(values: np.ndarray) -> np.ndarray:
    """Clamp to [0, 1] in place (np.clip's wrapper costs more than the work on small arrays)."""
    np.maximum(values, 0.0, out=values)
    return np.minimum(values, 1.0, out=values)
