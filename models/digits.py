"""`normalize_digit`: a photo or drawing of one digit made to look the way MNIST itself was made."""

from __future__ import annotations

import bisect
import functools

import numpy as np
from PIL import Image

DIGIT_BOX = 20  # MNIST fitted each digit's longest side into 20 px...
DIGIT_CANVAS = 28  # ...and centred its mass in a 28x28 field (measured: mean CoM 14.0, 14.0)
MIN_INK_CONTRAST = 0.08  # below this the image is treated as blank paper
ANALYSIS_SIZE = 160  # longest side a photo is reduced to: a 20 px target needs no more (bench: same accuracy as 320)
DRAFT_SIZE = 112  # JPEG draft decoding (DCT scaling 1/2..1/8) keeps at least this many pixels per side
SMALL_SIDE = 32  # images with a side this short (MNIST-sized drawings) are analysed pixel by pixel
BLOCK_INK = 0.4  # a 2x2 block counts as stroke when its mean ink reaches this (isolated noise pixels do not)
_RAMP = np.arange(DIGIT_CANVAS, dtype=np.float32)
_BORDER = np.ones((DIGIT_CANVAS, DIGIT_CANVAS), dtype=bool)
_BORDER[1:-1, 1:-1] = False  # the outermost ring of pixels
_LEVELS = np.arange(256, dtype=np.float64)


def normalize_digit(image: Image.Image) -> np.ndarray:
    """Turn a grayscale photo or drawing of one digit into a 28x28 MNIST-style array in [0, 1].

    Steps (as MNIST was made): ink made bright on a dark background, uneven lighting
    removed, contrast stretched, cropped to the ink's (noise-robust) bounding box, the
    longest side fitted to 20 px keeping aspect, and placed so its centre of mass is
    at the centre of a 28x28 field. A 28x28 MNIST image comes out essentially unchanged.
    `image` must already be mode "L" (see `models.imaging.load_oriented`).

    Cost: the statistics (paper level, lighting plane, ink levels, bounding box) come from
    a 2x2-averaged view of the image; only the digit's crop is mapped at full resolution.
    """
    if image.mode != "L":
        raise ValueError(f"normalize_digit expects a mode 'L' image, got {image.mode!r}")
    if max(image.size) > ANALYSIS_SIZE:  # a 20 px target needs no more; keeps a photo well under 1 ms
        image = image.copy()
        image.thumbnail((ANALYSIS_SIZE, ANALYSIS_SIZE), Image.BILINEAR, reducing_gap=2.0)
    raw = np.asarray(image)
    if _already_mnist(raw):
        return raw.astype(np.float32) * (1.0 / 255.0)
    factor = 2 if min(raw.shape) > SMALL_SIDE else 1
    ink = InkMap.fit(_block_sums(raw) if factor == 2 else raw, factor)
    if ink is None:
        return np.zeros((DIGIT_CANVAS, DIGIT_CANVAS), dtype=np.float32)
    top, bottom, left, right = ink.bounding_box(raw.shape)
    crop = ink.apply(raw[top:bottom, left:right], top, left)
    return _place_by_centre_of_mass(_fit_longest_side(crop, DIGIT_BOX), DIGIT_CANVAS)


class InkMap:
    """Pixel value -> ink in [0, 1]: ink = clip(gain * (sign * v / 255 + offset - plane(y, x)), 0, 1).

    `sign`/`offset` make the ink bright on dark (MNIST's polarity), `plane` is the background's
    lighting (least squares on the paper pixels), `gain` and the plane's constant stretch the
    typical stroke to 1 and the noise floor to 0. Fitted on a (block-averaged) `grid` whose cells
    are `factor` pixels wide.
    """

    def __init__(self, sign: float, offset: float, plane: tuple[float, float, float], gain: float,
                 grid_ink: np.ndarray, factor: int) -> None:
        self.sign, self.offset, self.plane, self.gain = sign, offset, plane, gain
        self.grid_ink, self.factor = grid_ink, factor

    @classmethod
    def fit(cls, grid: np.ndarray, factor: int) -> InkMap | None:
        """The map of an image whose `factor` x `factor` pixel sums are `grid` (factor 1: the uint8 pixels);
        None when there is no ink (blank paper)."""
        full_scale = 255.0 * factor * factor
        median = _percentile_bin(np.bincount(grid.ravel()), 0.5) / full_scale
        values = grid.astype(np.float32)
        values *= 1.0 / full_scale
        sign, offset = 1.0, 0.0
        if median > 0.5:  # light paper, dark ink: flip to MNIST's white-on-black
            values, median, sign, offset = 1.0 - values, 1.0 - median, -1.0, 1.0
        plane = _background_plane(values, median)
        height, width = values.shape
        above = values - (plane @ _centred_coordinates(height, width)).reshape(height, width)
        _unit(above)  # clamping first changes nothing below: low >= 0 and high <= 1
        # +1/8 of a level before truncating: on flat paper `above` is a multiple of 1/4 level (2x2 sums of
        # 8-bit pixels), and a plane off by float rounding would otherwise drop a quarter of the cells a bin.
        levels = _ink_levels(np.bincount((above * 255.0 + 0.125).astype(np.uint8).ravel(), minlength=256))
        if levels is None:
            return None
        low, high = levels
        gain = 1.0 / (high - low)
        above -= low
        above *= gain
        # The plane in pixel coordinates: cell index i is pixel i * factor + (factor - 1) / 2.
        c0, cy, cx = (float(c) for c in plane)
        ay, ax = cy / factor, cx / factor
        a0 = c0 - ay * ((height - 1) / 2 * factor + (factor - 1) / 2) - ax * ((width - 1) / 2 * factor + (factor - 1) / 2)
        return cls(sign, offset, (a0 + low, ay, ax), gain, _unit(above), factor)

    def apply(self, pixels: np.ndarray, top: int, left: int) -> np.ndarray:
        """The ink of `pixels`, a full-resolution crop whose top-left pixel is at (`top`, `left`)."""
        a0, ay, ax = self.plane
        height, width = pixels.shape
        rows = (self.offset - a0 - ay * np.arange(top, top + height, dtype=np.float32)) * self.gain
        cols = (-ax * self.gain) * np.arange(left, left + width, dtype=np.float32)
        ink = pixels.astype(np.float32) * (self.sign * self.gain / 255.0)
        ink += rows[:, None]
        ink += cols[None, :]
        return _unit(ink)

    def bounding_box(self, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """Bounding box (top, bottom, left, right) in pixels of the ink, ignoring specks and far-off crumbs."""
        weights, trim = self.grid_ink >= BLOCK_INK, 0.002
        if self.factor == 1 or not weights.any():
            weights, trim = self.grid_ink > 0, 0.0
        top, bottom = _mass_span(weights.sum(axis=1), trim)
        left, right = _mass_span(weights.sum(axis=0), trim)
        f = self.factor
        return top * f, min(bottom * f, shape[0]), left * f, min(right * f, shape[1])


def _block_sums(raw: np.ndarray) -> np.ndarray:
    """Sums of 2x2 pixel blocks (uint16, 0..1020): a noise-robust half-size view of `raw`."""
    height, width = raw.shape[0] // 2 * 2, raw.shape[1] // 2 * 2
    rows = raw[0:height:2, :width].astype(np.uint16)
    rows += raw[1:height:2, :width]
    return rows[:, 0::2] + rows[:, 1::2]


def _already_mnist(raw: np.ndarray) -> bool:
    """True for a 28x28 white-on-black digit already fitted to ~20 px and mass-centred: MNIST as is.

    Such inputs (MNIST itself, or a client that normalises) skip the whole pipeline, which
    would only reproduce them up to resampling noise.
    """
    if raw.shape != (DIGIT_CANVAS, DIGIT_CANVAS):
        return False
    if raw[_BORDER].max() > 32:  # one gather, not four slices: this check runs on every 28x28 upload
        return False  # the border is not dark background
    rows, cols = raw.sum(axis=1, dtype=np.float32), raw.sum(axis=0, dtype=np.float32)
    mass = rows.sum()
    if mass == 0:
        return False
    inked_rows, inked_cols = rows.nonzero()[0], cols.nonzero()[0]
    extent = max(inked_rows[-1] - inked_rows[0], inked_cols[-1] - inked_cols[0]) + 1
    com_y, com_x = rows @ _RAMP / mass, cols @ _RAMP / mass
    return DIGIT_BOX - 2 <= extent <= DIGIT_BOX + 1 and abs(com_y - 14) <= 1 and abs(com_x - 14) <= 1


def resize_plain(image: Image.Image, size: int = DIGIT_CANVAS) -> np.ndarray:
    """The naive alternative (a plain resize), kept for comparisons: `digit_normalization` off."""
    return np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0


def _background_plane(values: np.ndarray, median: float) -> np.ndarray:
    """(c0, cy, cx) of the plane c0 + cy*y + cx*x fitted to the background, so a lighting
    gradient does not look like ink; y and x are cell indices centred on the grid's middle.

    Background cells are those at or below the `median` (ink is the minority). The least-squares
    plane solves the 3x3 normal equations, whose sums come from two small matrix products. Small
    images (up to 32x32 cells) get a flat background at the median.
    """
    height, width = values.shape
    flat = np.array([median, 0.0, 0.0], dtype=np.float32)
    if height * width <= SMALL_SIDE * SMALL_SIDE:
        return flat
    coordinates, pixels = _centred_coordinates(height, width), values.reshape(-1)  # rows 1, y, x
    background = coordinates * (pixels <= median + 1e-6)
    solution = _solve_3x3((background @ coordinates.T).tolist(), (background @ pixels).tolist())
    return flat if solution is None else np.array(solution, dtype=np.float32)


def _solve_3x3(a: list[list[float]], b: list[float]) -> tuple[float, float, float] | None:
    """x with a @ x = b (Cramer's rule; on a 3x3, `np.linalg.solve`'s call overhead costs more than the arithmetic).
    None when `a` is singular (a degenerate sample, e.g. background cells in one row only)."""
    (a00, a01, a02), (a10, a11, a12), (a20, a21, a22) = a
    b0, b1, b2 = b
    c00, c01, c02 = a11 * a22 - a12 * a21, a12 * a20 - a10 * a22, a10 * a21 - a11 * a20
    det = a00 * c00 + a01 * c01 + a02 * c02
    if abs(det) <= 1e-9 * abs(a00 * a11 * a22):  # a sum-of-squares diagonal bounds a regular det from below
        return None
    return ((b0 * c00 + b1 * (a02 * a21 - a01 * a22) + b2 * (a01 * a12 - a02 * a11)) / det,
            (b0 * c01 + b1 * (a00 * a22 - a02 * a20) + b2 * (a02 * a10 - a00 * a12)) / det,
            (b0 * c02 + b1 * (a01 * a20 - a00 * a21) + b2 * (a00 * a11 - a01 * a10)) / det)


@functools.lru_cache(maxsize=32)
def _centred_coordinates(height: int, width: int) -> np.ndarray:
    """Rows (1, y, x) of every cell of a height x width grid, y and x centred on the grid's middle
    (which keeps the float32 normal equations well conditioned). Cached: photos come in few shapes."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    coordinates = np.stack((np.ones(height * width, np.float32), ys.ravel() - (height - 1) / 2,
                            xs.ravel() - (width - 1) / 2))
    coordinates.setflags(write=False)
    return coordinates


def _otsu_threshold(hist: np.ndarray) -> int:
    """Otsu's threshold (a bin index) of a histogram: the split maximising the between-class variance,
    w_low * w_high * (mean_low - mean_high)^2, written as (m_low * w - m * w_low)^2 / (w_low * w_high)."""
    weight_low = np.cumsum(hist, dtype=np.float64)
    mass_low = np.cumsum(hist * _LEVELS[: hist.size])
    weight, mass = weight_low[-1], mass_low[-1]
    between = (mass_low * weight - mass * weight_low) ** 2 / np.maximum(weight_low * (weight - weight_low), 1e-12)
    return int(np.argmax(between))


def _percentile_bin(hist: np.ndarray, fraction: float) -> int:
    cumulative = np.cumsum(hist)
    return int(np.searchsorted(cumulative, fraction * cumulative[-1], side="left"))


def _ink_levels(hist: np.ndarray) -> tuple[float, float] | None:
    """(low, high): the noise floor, mapped to 0, and the typical stroke intensity, mapped to 1,
    from the 256-bin histogram of the background-free image; None when there is no ink."""
    cumulative = np.cumsum(hist).tolist()
    total = cumulative[-1]
    peak = bisect.bisect_left(cumulative, 0.999 * total)
    if peak < MIN_INK_CONTRAST * 255:
        return None
    threshold = _otsu_threshold(hist[: peak + 1])
    below = cumulative[threshold]  # the strokes are the mass above the threshold
    if total - below == 0:
        return None
    low = threshold / 2 / 255.0
    high = bisect.bisect_left(cumulative, below + 0.75 * (total - below), lo=threshold + 1) / 255.0
    if high - low < MIN_INK_CONTRAST / 2:
        return None
    return low, high


def _mass_span(profile: np.ndarray, trim: float) -> tuple[int, int]:
    """Smallest [start, stop) span of a 1-D mass profile, trimming `trim` of the mass at each end.
    (Profiles are <= 160 long: bisecting a list beats numpy's per-call cost.)"""
    cumulative = np.cumsum(profile).tolist()
    total = cumulative[-1]
    start = bisect.bisect_right(cumulative, total * trim)
    stop = bisect.bisect_left(cumulative, total * (1 - trim)) + 1
    return start, max(stop, start + 1)


def _fit_longest_side(crop: np.ndarray, box: int) -> np.ndarray:
    """`crop` resized so its longest side is `box` px, keeping its aspect: Lanczos-3 (antialiased when
    shrinking), the same weights as PIL's `Image.LANCZOS`, applied as two small matrix products."""
    height, width = crop.shape
    scale = box / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    return _unit(_lanczos_matrix(height, new_height) @ crop @ _lanczos_matrix(width, new_width).T)


@functools.lru_cache(maxsize=1024)
def _lanczos_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) resampling weights along one axis, as PIL computes them (`precompute_coeffs`).

    Cached: sizes are at most ANALYSIS_SIZE in and DIGIT_BOX out, so a few thousand pairs at most,
    and computing one costs more than the whole resize.
    """
    scale = size_in / size_out
    centres = (np.arange(size_out) + 0.5) * scale
    x = (np.arange(size_in)[None, :] - centres[:, None] + 0.5) / max(scale, 1.0)
    weights = np.sinc(x) * np.sinc(x / 3) * (np.abs(x) < 3)
    weights /= weights.sum(axis=1, keepdims=True)
    matrix = weights.astype(np.float32)
    matrix.setflags(write=False)
    return matrix


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
