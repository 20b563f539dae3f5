"""Accuracy of the registry's production digits model: clean MNIST test set and photo-like renderings.

Everything goes through the same code paths as serving: `models.registry.load_model` for the
network, `models.preprocessing.image_to_array` / `to_tensor` for the photos.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from bench.digit_photos import VARIANTS
from models.preprocessing import digit_preset, image_to_array, to_tensor
from models.registry import ModelRegistry
from models.runtime import LoadedModel, load_model
from training.data.mnist import default_data_dir, load_mnist

log = logging.getLogger("bench.accuracy")

MAX_PIXELS = 40_000_000  # the service's default decompression-bomb guard
BATCH = 1000


@dataclass(frozen=True)
class CleanResult:
    """Top-1 accuracy on the MNIST test tensors (no image decoding)."""

    version: str
    samples: int
    correct: int
    accuracy: float
    seconds: float


@dataclass(frozen=True)
class PhotoResult:
    """Top-1 accuracy of one `VARIANTS` rendering, with the manifest's preset and with a plain resize."""

    variant: str
    samples: int
    accuracy: float  # manifest preset (digit normalisation on)
    accuracy_plain: float  # digit_preset(digit_normalization=False)
    mean_bytes: float  # mean encoded size of one rendering
    preprocess_ms: float  # mean image_to_array time per image, manifest preset


def load_production(device: torch.device | None = None) -> LoadedModel:
    """The verified production digits model from the default registry (raises registry errors)."""
    return load_model(ModelRegistry(), "digits", "production", device or torch.device("cpu"))


def load_test_set() -> tuple[np.ndarray, np.ndarray]:
    """MNIST test images (N, 28, 28) uint8 and labels (N,) int64 from `default_data_dir()`."""
    test = load_mnist(default_data_dir())["test"]
    return test.images.numpy(), test.labels.numpy()


def predict(model: LoadedModel, batch: torch.Tensor) -> np.ndarray:
    """Predicted class indices for a preprocessed NCHW batch, in chunks of `BATCH`."""
    out = [model.predict_proba(batch[i : i + BATCH]).argmax(dim=1) for i in range(0, len(batch), BATCH)]
    return torch.cat(out).numpy()


def clean_accuracy(model: LoadedModel, images: np.ndarray, labels: np.ndarray) -> CleanResult:
    """Accuracy on uint8 `images` normalised as in training: (x/255 - mean)/std, N x 1 x 28 x 28."""
    started = time.perf_counter()
    batch = to_tensor(list(images.astype(np.float32) / 255.0), model.preprocessing)
    predicted = predict(model, batch)
    correct = int((predicted == labels).sum())
    return CleanResult(model.version, len(labels), correct, correct / len(labels), time.perf_counter() - started)


def _preprocess(photos: list[bytes], preset: dict[str, Any]) -> tuple[list[np.ndarray], float]:
    """`image_to_array` for every photo; returns the arrays and the total seconds spent."""
    started = time.perf_counter()
    arrays = [image_to_array(data, preset, max_pixels=MAX_PIXELS) for data in photos]
    return arrays, time.perf_counter() - started


def photo_accuracy(model: LoadedModel, images: np.ndarray, labels: np.ndarray, variant: str,
                   seed: int) -> PhotoResult:
    """Render each digit with `VARIANTS[variant]` (rng seeded by `seed`), decode and classify it.

    Raises `models.imaging.ImageError` if a rendering cannot be decoded (a bug in the renderer).
    """
    rng = np.random.default_rng(seed)
    photos = [VARIANTS[variant](digit, rng) for digit in images]
    arrays, seconds = _preprocess(photos, model.preprocessing)
    plain_preset = {**digit_preset(digit_normalization=False), **_norm(model.preprocessing)}
    plain_arrays, _ = _preprocess(photos, plain_preset)
    hits = (predict(model, to_tensor(arrays, model.preprocessing)) == labels).sum()
    plain_hits = (predict(model, to_tensor(plain_arrays, plain_preset)) == labels).sum()
    return PhotoResult(variant, len(labels), float(hits / len(labels)), float(plain_hits / len(labels)),
                       float(np.mean([len(p) for p in photos])), 1000.0 * seconds / len(photos))


def _norm(preset: dict[str, Any]) -> dict[str, Any]:
    """The mean/std of `preset`, so the plain comparison differs only in digit normalisation."""
    return {"mean": preset["mean"], "std": preset["std"]}


def run(photo_count: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Clean accuracy on all test digits and photo accuracy on the first `photo_count`, per variant.

    Returns a JSON-ready dict: {"clean": CleanResult fields, "photos": [PhotoResult fields, ...]}.
    """
    model = load_production()
    images, labels = load_test_set()
    log.info("model digits/%s; %d test digits", model.version, len(labels))
    clean = clean_accuracy(model, images, labels)
    log.info("clean accuracy %.4f (%d/%d)", clean.accuracy, clean.correct, clean.samples)
    photos = []
    for index, variant in enumerate(VARIANTS):
        started = time.perf_counter()
        result = photo_accuracy(model, images[:photo_count], labels[:photo_count], variant, seed + index)
        log.info("photo %-12s accuracy %.4f (plain resize %.4f) in %.1fs", variant, result.accuracy,
                 result.accuracy_plain, time.perf_counter() - started)
        photos.append(result)
    return {"clean": asdict(clean), "photos": [asdict(p) for p in photos], "photo_seed": seed}
