"""The fast path for the commonest upload, a plain JPEG: header checks, EXIF orientation and a
DCT-scaled libjpeg-turbo decode straight from the bytes (simplejpeg), skipping PIL's Python-level
marker parser and its decoder's buffering.

It gives PIL's pixels to the byte: both run libjpeg-turbo with the same scale and colour
conversion (`tests/models/test_jpeg.py` compares them on many shapes, scales and orientations).
Anything out of the ordinary returns None and the caller takes PIL's path, which then decodes it
or words the error: CMYK/YCCK, an XMP packet that might carry the orientation, markers that do
not parse, a file libjpeg-turbo flags as damaged, more pixels than the budget.
"""

from __future__ import annotations

import simplejpeg
from PIL import ExifTags, Image

START_OF_IMAGE = b"\xff\xd8\xff"
_START_OF_SCAN = 0xDA  # metadata segments all come before the first scan
_EXIF_PREFIX = b"Exif\x00\x00"
_XMP_PREFIX = b"http://ns.adobe.com/xap/1.0/\x00"
# EXIF orientation -> the transpose that makes the image upright (the table of `PIL.ImageOps.exif_transpose`;
# `models.imaging.load_oriented` uses it too).
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


def decode_plain_jpeg(data: bytes, *, mode: str, draft_size: tuple[int, int], max_pixels: int,
                      max_aspect: float) -> Image.Image | None:
    """`data` decoded upright into `mode` ("L" or "RGB") at PIL's draft scale for `draft_size`,
    or None when `data` is not a plain JPEG (see the module docstring), or is over the pixel or
    aspect-ratio budget, and PIL's path should decide (and word the refusal)."""
    if mode not in {"L", "RGB"} or not data.startswith(START_OF_IMAGE):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in {"Gray", "YCbCr"} or not 0 < width * height <= max_pixels:
        return None
    if max(width, height) > max_aspect * min(width, height):
        return None
    orientation = exif_orientation(data)
    if orientation is None:
        return None
    scale = draft_scale((width, height), draft_size)
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="GRAY" if mode == "L" else "RGB", min_factor=scale,
                                        min_width=-(-width // scale), min_height=-(-height // scale))
    except ValueError:
        return None
    image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels)
    method = UPRIGHT.get(orientation)
    return image.transpose(method) if method is not None else image


def draft_scale(size: tuple[int, int], draft_size: tuple[int, int]) -> int:
    """The DCT scale divisor PIL's `JpegImageFile.draft` picks for an image of `size`: the largest
    of 8, 4, 2, 1 that keeps both sides at least `draft_size`."""
    fits = min(size[0] // draft_size[0], size[1] // draft_size[1])
    return next((scale for scale in (8, 4, 2) if fits >= scale), 1)


def exif_orientation(data: bytes) -> int | None:
    """The EXIF orientation PIL's `getexif` reports for the JPEG `data` (1 without one), or None when
    only PIL can tell: the segments before the scan do not parse, or an XMP packet (which PIL reads
    an orientation from when EXIF has none) is present."""
    offset, orientation, seen_exif, seen_xmp = 2, None, False, False
    while True:
        if offset + 4 > len(data) or data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte before a marker
            offset += 1
            continue
        if marker == _START_OF_SCAN:
            break
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        if length < 2:
            return None
        if marker == 0xE1:  # APP1: EXIF (PIL keeps the first one) or XMP
            segment = data[offset + 4 : offset + 2 + length]
            if segment.startswith(_EXIF_PREFIX) and not seen_exif:
                seen_exif = True
                try:
                    orientation = _orientation_tag(segment)
                except ValueError:
                    return None
            seen_xmp = seen_xmp or segment.startswith(_XMP_PREFIX)
        offset += 2 + length
    if orientation is None and seen_xmp:
        return None
    return 1 if orientation is None else orientation


def _orientation_tag(segment: bytes) -> int | None:
    """The Orientation tag of an APP1 EXIF segment, None without one (a value that is not a number
    gives 0, which, as for PIL, means no transpose). ValueError when the segment does not parse."""
    exif = Image.Exif()
    try:
        exif.load(segment)
    except Exception as exc:  # PIL's TIFF reader raises many kinds on malformed data
        raise ValueError(f"unreadable EXIF: {exc}") from exc
    value = exif.get(ExifTags.Base.Orientation)
    return value if value is None or isinstance(value, int) else 0
