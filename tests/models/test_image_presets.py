"""Preset kind "rgb": torchvision's resize + centre crop, on real decoded photos."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from models.image_presets import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS, resize_then_crop, rgb_preset
from models.preprocessing import example_input, image_to_array, to_tensor
from tests.conftest import IMAGENET_SAMPLES


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_matches_torchvision_resize_and_centre_crop():
    preset = rgb_preset(224, 256, IMAGENET_MEAN, IMAGENET_STD)
    photo = Image.open(IMAGENET_SAMPLES / "teapot.jpg").convert("RGB").resize((640, 480))
    data = jpeg(photo)
    ours = to_tensor([image_to_array(data, preset, max_pixels=10**8)], preset)
    reference = v2.Compose([v2.PILToTensor(), v2.Resize(256, antialias=True), v2.CenterCrop(224),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    theirs = reference(Image.open(io.BytesIO(data)).convert("RGB")).unsqueeze(0)
    assert ours.shape == theirs.shape == (1, 3, 224, 224)
    assert (ours - theirs).abs().mean() < 0.02  # PIL vs tensor antialias kernels differ slightly


def test_portrait_png_with_alpha_is_flattened_and_cropped():
    rgba = Image.new("RGBA", (300, 500), (255, 0, 0, 0))
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    preset = rgb_preset(224, 256, IMAGENET_MEAN, IMAGENET_STD)
    array = image_to_array(buffer.getvalue(), preset, max_pixels=10**8)
    assert array.shape == (224, 224, 3) and array.dtype == np.float32
    assert np.allclose(array, 1.0)  # transparent pixels composite onto white
    assert example_input(preset).shape == (1, 3, 224, 224)


def two_step(image: Image.Image, resize: int, size: int, interpolation: str) -> Image.Image:
    """The transform as written in the recipe: the whole image resized, then its centre cropped."""
    width, height = image.size
    new = (resize, int(resize * height / width)) if width <= height else (int(resize * width / height), resize)
    resized = image.resize(new, INTERPOLATIONS[interpolation], reducing_gap=None)
    left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    return resized.crop((left, top, left + size, top + size))


@pytest.mark.parametrize("interpolation", sorted(INTERPOLATIONS))
@pytest.mark.parametrize("shape", [(640, 480), (333, 517), (5000, 250), (101, 2000), (4000, 3000), (257, 256)])
def test_one_resample_of_the_crop_box_gives_the_two_step_pixels(interpolation: str, shape: tuple[int, int]):
    photo = Image.open(IMAGENET_SAMPLES / "teapot.jpg").convert("RGB").resize(shape)
    ours = np.asarray(resize_then_crop(photo, 256, (224, 224), interpolation), dtype=np.int16)
    theirs = np.asarray(two_step(photo, 256, 224, interpolation), dtype=np.int16)
    assert ours.shape == theirs.shape == (224, 224, 3)
    assert np.abs(ours - theirs).max() <= 1  # the same filter taps in the same order; float rounding aside
