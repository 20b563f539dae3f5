"""Photo-like renderings of MNIST digits: what a phone or a drawing canvas sends, not an MNIST tensor.

Used by the tests (each variant must classify like the clean digit) and by the benchmark
(accuracy of the whole decode + normalise + LeNet path on "photos").
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter


def mnist_png(digit: np.ndarray) -> bytes:
    """The 28x28 uint8 MNIST digit as a PNG, untouched (white on black)."""
    return _encode(Image.fromarray(digit, mode="L"), "PNG")


def _ink_on_paper(digit: np.ndarray, size: int, paper: int = 235, ink: int = 30) -> Image.Image:
    """Dark ink on light paper, the digit scaled to `size` px (smooth upsampling)."""
    big = Image.fromarray(digit, mode="L").resize((size, size), Image.BICUBIC)
    alpha = np.asarray(big, dtype=np.float32) / 255.0
    pixels = paper * (1 - alpha) + ink * alpha
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")


def inverted(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Black ink on white paper at MNIST size."""
    return _encode(Image.fromarray(255 - digit, mode="L"), "PNG")


def scaled(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A 300x300 RGB scan of dark ink on light paper."""
    return _encode(_ink_on_paper(digit, 300).convert("RGB"), "PNG")


def off_centre(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A small digit somewhere off-centre on a 640x480 page."""
    page = Image.new("L", (640, 480), 235)
    size = int(rng.integers(120, 220))
    x, y = int(rng.integers(0, 640 - size)), int(rng.integers(0, 480 - size))
    page.paste(_ink_on_paper(digit, size), (x, y))
    return _encode(page.convert("RGB"), "JPEG", quality=90)


def with_alpha(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A canvas drawing: black strokes on a fully transparent background (RGBA PNG)."""
    alpha = Image.fromarray(digit, mode="L").resize((280, 280), Image.BICUBIC)
    rgba = Image.merge("RGBA", (Image.new("L", alpha.size, 0),) * 3 + (alpha,))
    return _encode(rgba, "PNG")


def exif_rotated(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A phone JPEG stored sideways with EXIF orientation 6 (display = rotate 90 degrees clockwise)."""
    upright = _ink_on_paper(digit, 240).convert("RGB")
    stored = upright.transpose(Image.ROTATE_90)  # orientation 6 undoes this on display
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(stored, "JPEG", quality=90, exif=exif.tobytes())


def noisy_photo(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Grey pencil, uneven lighting, sensor noise, slight blur, JPEG quality 60, 640x480."""
    size = int(rng.integers(200, 320))
    page = np.full((480, 640), 220.0, dtype=np.float32)
    ramp = np.linspace(-35, 25, 640, dtype=np.float32)[None, :] + np.linspace(-15, 15, 480, dtype=np.float32)[:, None]
    x, y = int(rng.integers(40, 640 - size - 40)), int(rng.integers(20, 480 - size - 20))
    ink = np.asarray(Image.fromarray(digit, mode="L").resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    page[y : y + size, x : x + size] = page[y : y + size, x : x + size] * (1 - 0.65 * ink)
    page = page + ramp + rng.normal(0, 8, page.shape).astype(np.float32)
    image = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8), mode="L").filter(ImageFilter.GaussianBlur(1.0))
    return _encode(image.convert("RGB"), "JPEG", quality=60)


VARIANTS: dict[str, Callable[[np.ndarray, np.random.Generator], bytes]] = {
    "inverted": inverted,
    "scaled": scaled,
    "off_centre": off_centre,
    "alpha": with_alpha,
    "exif_rotated": exif_rotated,
    "noisy_photo": noisy_photo,
}


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
