"""normalize_digit: photos and drawings must look like MNIST to the committed LeNet-5."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from bench.digit_photos import VARIANTS, mnist_png
from models.preprocessing import digit_preset, image_to_array, normalize_digit, to_tensor
from models.registry import ModelRegistry
from models.runtime import load_model

PRESET = digit_preset()
N = 60


@pytest.fixture(scope="module")
def production_model():
    return load_model(ModelRegistry(), "digits", "production", torch.device("cpu"))


def predict(model, arrays: list[np.ndarray]) -> np.ndarray:
    return model.predict_proba(to_tensor(arrays, PRESET)).argmax(1).numpy()


def test_mnist_digit_passes_through_unchanged_in_effect(mnist_test):
    images, _ = mnist_test
    errors = []
    for digit in images[:N]:
        out = normalize_digit(Image.fromarray(digit))
        original = digit.astype(np.float32) / 255
        # equal up to a one-pixel shift (centre-of-mass rounding) and a slight contrast stretch
        best = min(np.abs(np.roll(out, (dy, dx), axis=(0, 1)) - original).mean()
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        assert best < 0.05
        errors.append(best)
        # mass centre stays within half a pixel of MNIST's (14, 14)
        ys, xs = np.mgrid[0:28, 0:28]
        assert abs((out * ys).sum() / out.sum() - 14) < 0.75
        assert abs((out * xs).sum() / out.sum() - 14) < 0.75
    assert np.mean(errors) < 0.03


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_photo_variants_classify_like_the_clean_digit(variant, mnist_test, production_model):
    images, labels = mnist_test
    rng = np.random.default_rng(1)
    clean = predict(production_model, [image_to_array(mnist_png(d), PRESET, max_pixels=10**8) for d in images[:N]])
    photos = [image_to_array(VARIANTS[variant](d, rng), PRESET, max_pixels=10**8) for d in images[:N]]
    varied = predict(production_model, photos)
    assert (clean == labels[:N]).mean() >= 0.98
    assert (varied == clean).mean() >= 0.95, f"{variant}: {(varied == clean).mean():.3f} agree with the clean digit"


def test_plain_resize_is_what_normalisation_fixes(mnist_test, production_model):
    images, labels = mnist_test
    rng = np.random.default_rng(2)
    photos = [VARIANTS["off_centre"](d, rng) for d in images[:N]]
    plain = digit_preset(digit_normalization=False)
    naive = predict(production_model, [image_to_array(p, plain, max_pixels=10**8) for p in photos])
    normalised = predict(production_model, [image_to_array(p, PRESET, max_pixels=10**8) for p in photos])
    assert (normalised == labels[:N]).mean() > (naive == labels[:N]).mean() + 0.5


def test_blank_paper_gives_an_empty_field():
    blank = io.BytesIO()
    Image.new("L", (300, 200), 230).save(blank, format="PNG")
    assert image_to_array(blank.getvalue(), PRESET, max_pixels=10**8).max() == 0


def test_output_is_28x28_in_unit_range(mnist_test):
    rng = np.random.default_rng(3)
    out = image_to_array(VARIANTS["noisy_photo"](mnist_test[0][0], rng), PRESET, max_pixels=10**8)
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1


def test_normalize_digit_rejects_colour_images():
    with pytest.raises(ValueError, match="mode 'L'"):
        normalize_digit(Image.new("RGB", (28, 28)))


@pytest.mark.parametrize("shape", [(54, 42), (80, 30), (17, 25), (160, 120), (3, 1)])
def test_the_matrix_lanczos_resize_is_pils(shape):
    from models.digits import DIGIT_BOX, _fit_longest_side

    crop = np.random.default_rng(0).random(shape, dtype=np.float32)
    ours = _fit_longest_side(crop, DIGIT_BOX)
    height, width = shape
    scale = DIGIT_BOX / max(shape)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    pil = np.clip(np.asarray(Image.fromarray(crop, mode="F").resize(size, Image.LANCZOS)), 0, 1)
    assert ours.shape == pil.shape and max(ours.shape) == DIGIT_BOX
    assert np.abs(ours - pil).max() < 1e-5


def test_the_3x3_solver_is_numpys():
    from models.digits import _solve_3x3

    rng = np.random.default_rng(0)
    for _ in range(200):
        m = rng.normal(size=(3, 3))
        a, b = m @ m.T + 0.01 * np.eye(3), rng.normal(size=3)
        np.testing.assert_allclose(_solve_3x3(a.tolist(), b.tolist()), np.linalg.solve(a, b), rtol=1e-6, atol=1e-9)
    assert _solve_3x3([[4.0, 2.0, 6.0], [2.0, 1.0, 3.0], [6.0, 3.0, 9.0]], [1.0, 2.0, 3.0]) is None  # rank 1


@pytest.mark.parametrize("nudge", [-1e-6, 1e-6])
def test_a_float_rounding_of_the_lighting_plane_changes_nothing(nudge, mnist_test, monkeypatch):
    """On flat paper the background-free values sit exactly on histogram bin edges; a plane off by
    float rounding (another BLAS, another solver) must not move them into the next bin."""
    import models.digits as digits

    images, _ = mnist_test
    rng = np.random.default_rng(3)
    photos = [VARIANTS["off_centre"](digit, rng) for digit in images[:40]]
    plain = [image_to_array(photo, PRESET, max_pixels=10**7) for photo in photos]
    fitted = digits._background_plane
    monkeypatch.setattr(digits, "_background_plane", lambda values, median: fitted(values, median) + [nudge, 0, 0])
    nudged = [image_to_array(photo, PRESET, max_pixels=10**7) for photo in photos]
    assert max(np.abs(a - b).max() for a, b in zip(plain, nudged)) < 1e-3
