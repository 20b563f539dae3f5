"""The JPEG fast path gives PIL's pixels exactly, and hands everything unusual back to PIL."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from models.imaging import (MAX_ASPECT_RATIO, ImageTooLargeError, UndecodableImageError, decode_upright, load_oriented,
                            open_image)
from models.jpeg import decode_plain_jpeg, exif_orientation

LIMIT = 40_000_000


def jpeg(size: tuple[int, int], *, mode: str = "RGB", seed: int = 0, **save) -> bytes:
    """A JPEG of smooth random content (so every DCT scale has detail to get wrong)."""
    width, height = size
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize(size, Image.BICUBIC).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **save)
    return buffer.getvalue()


def pil_path(data: bytes, mode: str, draft_size: tuple[int, int] | None) -> np.ndarray:
    """PIL alone, the reference: open, draft, load, `ImageOps.exif_transpose`, convert."""
    image = Image.open(io.BytesIO(data))
    image.draft(mode, draft_size)
    image.load()
    return np.asarray(ImageOps.exif_transpose(image).convert(mode))


def fast_path(data: bytes, mode: str, draft_size: tuple[int, int]) -> np.ndarray:
    image = decode_plain_jpeg(data, mode=mode, draft_size=draft_size, max_pixels=LIMIT, max_aspect=MAX_ASPECT_RATIO)
    assert image is not None, "the fast path declined a plain JPEG"
    return np.asarray(image)


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (1001, 997), (113, 200), (57, 31)])
@pytest.mark.parametrize("subsampling", [0, 2])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_pixels_equal_pils_at_every_draft_scale(size, subsampling, mode):
    data = jpeg(size, subsampling=subsampling, quality=90)
    for draft in [(28, 28), (112, 112), (256, 256), (2000, 2000)]:  # scales 8, 4, 2, 1 where the size allows
        np.testing.assert_array_equal(fast_path(data, mode, draft), pil_path(data, mode, draft))


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_grayscale_and_progressive_jpegs_equal_pils(mode):
    for data in [jpeg((320, 240), mode="L"), jpeg((320, 240), progressive=True), jpeg((320, 240), optimize=True)]:
        np.testing.assert_array_equal(fast_path(data, mode, (112, 112)), pil_path(data, mode, (112, 112)))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_each_exif_orientation_is_applied_as_pil_does(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = jpeg((200, 120), exif=exif.tobytes())
    assert exif_orientation(data) == orientation
    np.testing.assert_array_equal(fast_path(data, "L", (28, 28)), pil_path(data, "L", (28, 28)))
    # ...and the PIL path of the service (what unusual JPEGs and other formats take) agrees as well
    np.testing.assert_array_equal(np.asarray(load_oriented(open_image(data), mode="L", draft_size=(28, 28))),
                                  pil_path(data, "L", (28, 28)))


# EXIF that PIL reads but cannot write back: tag 0x0120 (FreeOffsets, a LONG) holding ASCII, beside
# Orientation 6 (found by fuzzing; `ImageOps.exif_transpose` raised struct.error on it: a 500).
UNWRITABLE_EXIF = (b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x02\x01 \x00\x02\x00\x00\x00\x06\x00\x00\x00&"
                   b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\x00\x00\x00\x00phone\x00")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_pil_cannot_write_back_still_rotates(fmt):
    buffer = io.BytesIO()
    Image.new("L", (64, 32), 200).save(buffer, fmt, exif=UNWRITABLE_EXIF)
    data = buffer.getvalue()
    assert decode_upright(data, mode="L", draft_size=(28, 28)).size == (32, 64)  # orientation 6 applied
    assert load_oriented(open_image(data), mode="L").size == (32, 64)


def test_exif_without_orientation_and_no_exif_mean_upright():
    exif = Image.Exif()
    exif[0x010F] = "a phone"  # Make, but no Orientation tag
    assert exif_orientation(jpeg((64, 64), exif=exif.tobytes())) == 1
    assert exif_orientation(jpeg((64, 64))) == 1


def test_unusual_jpegs_are_left_to_pil():
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    cmyk = jpeg((64, 64), mode="CMYK")
    for data in [cmyk, jpeg((64, 64), xmp=xmp), b"\xff\xd8\xff\xe0\x00", b"\x89PNG\r\n\x1a\n"]:
        assert decode_plain_jpeg(data, mode="L", draft_size=(28, 28), max_pixels=LIMIT, max_aspect=MAX_ASPECT_RATIO) is None
    # ...and PIL's path still decodes what it can: the CMYK photo (at its draft scale), the XMP-rotated one.
    assert decode_upright(cmyk, mode="RGB", draft_size=(28, 28)).size == (32, 32)  # drafted at 1/2, as PIL does
    assert decode_upright(jpeg((64, 32), xmp=xmp), mode="L", draft_size=(28, 28)).size == (32, 64)


def test_damaged_or_oversized_jpegs_get_pils_errors():
    data = jpeg((640, 480))
    assert decode_plain_jpeg(data[: len(data) // 2], mode="L", draft_size=(112, 112), max_pixels=LIMIT, max_aspect=MAX_ASPECT_RATIO) is None
    with pytest.raises(UndecodableImageError, match="truncated"):
        decode_upright(data[: len(data) // 2], mode="L", draft_size=(112, 112))
    assert decode_plain_jpeg(data, mode="L", draft_size=(112, 112), max_pixels=640 * 480 - 1, max_aspect=MAX_ASPECT_RATIO) is None
    with pytest.raises(ImageTooLargeError, match="640x480"):
        decode_upright(data, mode="L", draft_size=(112, 112), max_pixels=640 * 480 - 1)
