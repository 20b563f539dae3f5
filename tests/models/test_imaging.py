"""Opening untrusted bytes: allowed formats, decompression bombs, broken files."""

from __future__ import annotations

import io
import zlib
import struct

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from models.imaging import (ImageTooLargeError, UndecodableImageError, UnsupportedImageTypeError, load_oriented,
                            open_image)


def encode(fmt: str, mode: str = "RGB", size=(32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format=fmt)
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height, with a tiny compressed body (never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"])
def test_allowed_formats_open(fmt):
    image = open_image(encode(fmt))
    assert load_oriented(image, mode="L").size == (32, 32)


def test_decompression_bomb_refused_from_header():
    data = png_bomb(20000, 20000)
    assert len(data) < 2000
    with pytest.raises(ImageTooLargeError, match="400000000 pixels"):
        open_image(data, max_pixels=40_000_000)
    with pytest.raises(ImageTooLargeError, match="8000x8000"):
        open_image(png_bomb(8000, 8000), max_pixels=40_000_000)


def test_unsupported_format_is_415_kind():
    with pytest.raises(UnsupportedImageTypeError):
        open_image(b"%PDF-1.4 not an image at all")
    with pytest.raises(UnsupportedImageTypeError, match="ICO"):
        open_image(encode("ICO"))


def test_truncated_image_is_undecodable():
    data = encode("PNG", size=(64, 64))
    image = open_image(data[: len(data) // 2 + 20])
    with pytest.raises(UndecodableImageError):
        load_oriented(image, mode="L")


def test_garbage_declared_as_png_is_undecodable():
    with pytest.raises(UndecodableImageError):
        open_image(b"\x00" * 100, declared_type="image/png")


def test_empty_file_is_undecodable():
    with pytest.raises(UndecodableImageError, match="empty"):
        open_image(b"")


def test_sixteen_bit_png_is_rescaled():
    buffer = io.BytesIO()
    Image.new("I;16", (8, 8), 40000).save(buffer, format="PNG")
    gray = load_oriented(open_image(buffer.getvalue()), mode="L")
    assert gray.getpixel((0, 0)) == 255


def _oriented(fmt: str, metadata: str) -> bytes:
    """A 40x20 image with orientation 6 (turn 90 degrees clockwise) in `metadata`: "exif" or "xmp" (PNG only)."""
    buffer, image = io.BytesIO(), Image.new("L", (40, 20), 0)
    if metadata == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6
        image.save(buffer, format=fmt, exif=exif.tobytes())
    else:
        info = PngInfo()  # PNG: an iTXt chunk, as Adobe's tools write it
        info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>'
                      '<rdf:Description tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
        image.save(buffer, format=fmt, pnginfo=info)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt,metadata", [("PNG", "exif"), ("PNG", "xmp"), ("WEBP", "exif"), ("TIFF", "exif")])
def test_orientation_from_any_metadata_is_applied(fmt, metadata):
    # orientation_of skips PIL's getexif when the image carries none of its sources: each source still counts
    image = load_oriented(open_image(_oriented(fmt, metadata)), mode="L")
    assert image.size == (20, 40)


def test_an_image_without_metadata_stays_as_stored():
    assert load_oriented(open_image(encode("PNG", "L", (40, 20))), mode="L").size == (40, 20)
