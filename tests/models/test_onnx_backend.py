"""The onnxruntime backend: the same predictions as PyTorch on real inputs, and refusals that name the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from models.onnx_backend import BackendError, build_runner, onnx_runner
from models.preprocessing import image_to_array, to_tensor
from models.registry import ModelRegistry
from models.runtime import load_model
from tests.conftest import COMPONENTS_DIR, IMAGENET_SAMPLES, REPO, png_bytes

COMMITTED = ModelRegistry(REPO / "models" / "store")
CPU = torch.device("cpu")


def both_backends(task: str) -> tuple:
    return (load_model(COMMITTED, task, "production", CPU),
            load_model(COMMITTED, task, "production", CPU, backend="onnxruntime"))


def assert_same_predictions(task: str, batch: torch.Tensor, top: int) -> None:
    eager, onnx = both_backends(task)
    assert onnx.backend == "onnxruntime" and eager.backend == "torch"
    expected, got = eager.predict_proba(batch), onnx.predict_proba(batch)
    assert (got - expected).abs().max() < 1e-5
    assert torch.equal(got.topk(top).indices, expected.topk(top).indices)


def test_digits_on_mnist_test_images(mnist_test):
    images, _ = mnist_test
    model = load_model(COMMITTED, "digits", "production", CPU)
    arrays = [image_to_array(png_bytes(image), model.preprocessing, max_pixels=10**6) for image in images[:256]]
    assert_same_predictions("digits", to_tensor(arrays, model.preprocessing), top=3)


@pytest.mark.parametrize(("task", "photos", "top"), [
    ("imagenet", sorted(IMAGENET_SAMPLES.glob("*.jpg")), 5),
    ("components", sorted((COMPONENTS_DIR / "validation").glob("*/*.jpg"))[:12], 3),
])
def test_photo_models_on_real_photos(task: str, photos: list[Path], top: int):
    assert photos, "the shared photos are missing"
    model = load_model(COMMITTED, task, "production", CPU)
    arrays = [image_to_array(p.read_bytes(), model.preprocessing, max_pixels=10**8) for p in photos]
    assert_same_predictions(task, to_tensor(arrays, model.preprocessing), top=top)


class DataDependentBranch(nn.Module):
    """What a tracer cannot capture: the branch taken depends on the input's values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) * 2 if bool(x.abs().sum() > 0) else x.flatten(1)


def test_an_export_that_differs_from_pytorch_is_refused():
    with pytest.raises(BackendError, match="differs from PyTorch"):
        onnx_runner(DataDependentBranch(), torch.zeros(1, 1, 4, 4))


def test_unknown_backend_and_gpu_device_are_refused_by_name():
    network = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises(BackendError, match="valid: torch, onnxruntime"):
        build_runner("tensorrt", network, torch.zeros(1, 1, 4, 4), CPU)
    with pytest.raises(BackendError, match="runs on the CPU"):
        build_runner("onnxruntime", network, torch.zeros(1, 1, 4, 4), torch.device("cuda"))
    assert build_runner("torch", network, torch.zeros(1, 1, 4, 4), CPU) is None
