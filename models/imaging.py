"""Opening untrusted image bytes safely: format allow-list, pixel budget, cheap decode.

Raises `ImageError` subclasses (domain errors); the service maps them to HTTP statuses.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from models.jpeg import UPRIGHT, decode_plain_jpeg

# The formats the API accepts, as PIL names them.
ALLOWED_FORMATS: frozenset[str] = frozenset({"PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "MPO"})
DEFAULT_MAX_PIXELS = 40_000_000  # a 48 MP phone photo is ~48e6; 40e6 keeps decode memory < ~160 MB
# Longer side over shorter side: past this, the resize to the model's input would make an image far larger
# than the upload (a 4000x1 strip scaled to 256 px high is 1,024,000 px wide).
MAX_ASPECT_RATIO = 20
# Files of our own data sets (training, evaluation) are trusted: a budget that only stops a broken file.
TRUSTED_MAX_PIXELS = 100_000_000


class ImageError(ValueError):
    """Base class of errors about an uploaded image."""


class UnsupportedImageTypeError(ImageError):
    """The bytes are not one of `ALLOWED_FORMATS`."""


class UndecodableImageError(ImageError):
    """The bytes claim an allowed format but cannot be decoded."""


class ImageTooLargeError(ImageError):
    """The declared pixel count exceeds the budget (decompression-bomb guard)."""


class ImageAspectError(ImageError):
    """The image is more than `MAX_ASPECT_RATIO` times longer than it is wide (or the reverse)."""


def check_aspect(width: int, height: int) -> None:
    """`ImageAspectError` when one side is more than `MAX_ASPECT_RATIO` times the other."""
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageAspectError(f"image is {width}x{height}; one side may be at most {MAX_ASPECT_RATIO} times the other")


def check_request_pixels(uploads: list[bytes], budget: int) -> None:
    """`ImageTooLargeError` when the images of one request have more than `budget` pixels together, read
    from their headers only (nothing is decoded; files whose header does not parse are left to fail later)."""
    total = 0
    for data in uploads:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                width, height = Image.open(io.BytesIO(data)).size
        except Exception:  # not an image: its own decode answers for it
            continue
        total += width * height
    if total > budget:
        raise ImageTooLargeError(f"the request's images have {total} pixels together; the limit is {budget} "
                                 "(MODELHOUSE_MAX_REQUEST_PIXELS)")


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, declared_type: str | None = None) -> Image.Image:
    """Parse the header of `data` and return a lazily-decoded PIL image.

    Only the header is read here, so the pixel budget is enforced before any pixel
    is decoded. `declared_type` (the part's Content-Type) decides between "not an
    image we take" (415) and "a broken image" (400) when PIL cannot identify the bytes.
    """
    if not data:
        raise UndecodableImageError("the file is empty")
    try:
        with warnings.catch_warnings():
            # PIL warns (and errors past 2x) on its own bomb limit; ours is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc)) from exc
    except UnidentifiedImageError:
        if declared_type and declared_type.lower().startswith("image/") and _declared_allowed(declared_type):
            raise UndecodableImageError(f"cannot decode the {declared_type} image") from None
        allowed = ", ".join(sorted(ALLOWED_FORMATS - {"MPO"}))
        raise UnsupportedImageTypeError(f"not a supported image; send one of {allowed}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UndecodableImageError(f"cannot read the image header: {exc}") from exc
    if image.format not in ALLOWED_FORMATS:
        allowed = ", ".join(sorted(ALLOWED_FORMATS - {"MPO"}))
        raise UnsupportedImageTypeError(f"image format {image.format} is not supported; send one of {allowed}")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise UndecodableImageError("the image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLargeError(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    check_aspect(width, height)
    return image


def _declared_allowed(declared_type: str) -> bool:
    subtype = declared_type.split("/", 1)[1].split(";", 1)[0].strip().lower()
    return subtype in {"png", "jpeg", "jpg", "pjpeg", "bmp", "x-ms-bmp", "gif", "webp", "tiff"}


def decode_upright(data: bytes, *, mode: str, draft_size: tuple[int, int] | None = None,
                   max_pixels: int = DEFAULT_MAX_PIXELS, declared_type: str | None = None) -> Image.Image:
    """Uploaded bytes -> an upright image in `mode`: `open_image`'s checks, then `load_oriented`.

    With a `draft_size`, a plain JPEG takes `models.jpeg.decode_plain_jpeg`: the same pixels, at a
    lower cost (README, "Serving performance": the A/B of this change).
    """
    if draft_size is not None:
        fast = decode_plain_jpeg(data, mode=mode, draft_size=draft_size, max_pixels=max_pixels,
                                 max_aspect=MAX_ASPECT_RATIO)
        if fast is not None:
            return fast
    image = open_image(data, max_pixels=max_pixels, declared_type=declared_type)
    return load_oriented(image, mode=mode, draft_size=draft_size)


def load_oriented(image: Image.Image, *, mode: str, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode `image` into `mode`, upright per its EXIF orientation.

    For JPEGs, `draft_size` lets libjpeg decode straight to a reduced scale (1/2..1/8)
    that is still at least that size, which is several times cheaper than decoding the
    full frame and resizing afterwards.
    """
    try:
        if draft_size is not None and image.format in {"JPEG", "MPO"}:
            image.draft(mode if mode in {"L", "RGB"} else None, draft_size)
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UndecodableImageError(f"cannot decode the image: {exc}") from exc
    # Not `ImageOps.exif_transpose`: it also re-serialises the EXIF, which raises struct.error on
    # metadata it can read but not write back (a fuzzed tag type), and copies an upright image.
    method = UPRIGHT.get(orientation_of(image))
    return flatten_to_mode(image.transpose(method) if method is not None else image, mode)


# Where `Image.getexif` looks for an orientation, besides a TIFF's own tags: with none of these in a decoded
# image's info there is nothing to read, and building the empty Exif would cost more than a small PNG's decode.
EXIF_INFO_KEYS = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")


def orientation_of(image: Image.Image) -> int:
    """The EXIF orientation PIL reads (EXIF, else an XMP packet), 1 when there is none or the metadata
    does not parse: such an image is shown as stored, as browsers do. Call it after `load`: a PNG's
    eXIf chunk may follow its pixels."""
    if not hasattr(image, "tag_v2") and not any(key in image.info for key in EXIF_INFO_KEYS):
        return 1
    try:
        return image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # PIL's TIFF reader raises many kinds on corrupt metadata
        return 1


def flatten_to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to `mode` ("L" or "RGB"), compositing any transparency onto white."""
    if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        # 16/32-bit images would be clipped by convert("L"); rescale to 8 bits first.
        values = np.asarray(image.convert("F"), dtype=np.float32)
        peak = float(values.max())
        scaled = values * (255.0 / peak) if peak > 0 else values
        image = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")
    has_alpha = image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    if image.mode != mode:
        image = image.convert(mode)
    return image
