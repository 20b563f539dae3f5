"""`python -m training.cifar10`: the networks of its recipes, the whitening layer, and a run on a few real
CIFAR-10 images that registers a task the service serves, with the manifest's test-time augmentation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from models.networks import build_network
from models.optimize import fold_batchnorm
from models.paths import data_dir
from models.preprocessing import image_to_array, to_tensor
from models.registry import ModelRegistry
from models.runtime import load_model
from training.cifar10 import RECIPES, main

CIFAR10 = data_dir("cifar10")
ARCHS = [("cifar-lenet", {"width": 2, "batchnorm": True}), ("keras-cnn", {"batchnorm": True}),
         ("keras-cnn", {"batchnorm": False}), ("alexnet-small", {"batchnorm": True}),
         ("airbench", {"widths": [16, 32, 32]})]


@pytest.mark.parametrize(("name", "args"), ARCHS)
def test_each_network_takes_cifar_images_and_serves_the_same_with_batch_norm_folded(name, args):
    torch.manual_seed(0)
    network = build_network(name, num_classes=10, **args)
    for module in network.modules():  # non-trivial statistics, so folding has something to do
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    network.eval()
    x = torch.randn(4, 3, 32, 32)
    assert network(x).shape == (4, 10)
    folded = fold_batchnorm(network)
    assert torch.allclose(network(x), folded(x), atol=1e-4)


def test_the_whitening_layer_decorrelates_the_training_images_patches():
    torch.manual_seed(0)
    mixing = torch.tensor([[1.0, 0.8, 0.3], [0.0, 0.5, 0.9], [0.2, 0.0, 0.4]])  # correlated colour channels
    images = torch.einsum("ij,njhw->nihw", mixing, torch.randn(64, 3, 16, 16))
    network = build_network("airbench", num_classes=10, widths=[8, 8, 8])
    network.init_whitening(images, eps=1e-6)
    out = torch.nn.functional.conv2d(images, network.whiten.weight[:12])  # the 12 filters; the rest are negatives
    flat = out.transpose(0, 1).reshape(12, -1)
    covariance = torch.cov(flat)
    assert torch.allclose(covariance, torch.eye(12), atol=0.05)
    assert torch.equal(network.whiten.weight[12:], -network.whiten.weight[:12])
    assert not network.whiten.weight.requires_grad


def test_fixed_size_networks_refuse_another_image_size(capsys):
    assert main(["--recipe", "keras-cnn", "--image-size", "64", "--no-register"]) == 2
    assert "--arch keras-cnn takes --image-size 32 only" in capsys.readouterr().err


@pytest.mark.skipif(not CIFAR10.is_dir(), reason=f"needs {CIFAR10}")
def test_a_run_on_a_few_real_images_registers_a_task_served_with_its_test_time_augmentation(tmp_path: Path,
                                                                                          store: Path):
    assert RECIPES["airbench"].knobs["tta"] == "hflip" and RECIPES["airbench"].knobs["precision"] == "bf16"
    assert main(["--task", "cifar-smoke", "--limit", "8", "--epochs", "1", "--width", "8", "--batch-size", "8", "--no-progress",
                 "--store", str(store), "--out-dir", str(tmp_path / "run"), "--promote"]) == 0
    registry = ModelRegistry(store)
    manifest = registry.verify_version("cifar-smoke", "production")
    assert manifest.architecture.name == "airbench" and manifest.preprocessing["tta"] == "hflip"
    assert manifest.training["config"]["precision"] == "bf16" and len(manifest.labels) == 10
    photo = CIFAR10 / "test" / "cat" / "0000.jpg"
    expected = load_model(registry, "cifar-smoke", "production", torch.device("cpu"))
    with TestClient(create_app(Settings(store_dir=store, device="cpu"))) as client:
        answer = client.post("/models/cifar-smoke/predict", params={"top_k": 10},
                             files=[("file", (photo.name, photo.read_bytes(), "image/jpeg"))])
    assert answer.status_code == 200, answer.text
    served = {p["label"]: p["probability"] for p in answer.json()["predictions"][0]["top"]}
    batch = to_tensor([image_to_array(photo.read_bytes(), manifest.preprocessing, max_pixels=10_000)],
                      manifest.preprocessing)
    probabilities = expected.predict_proba(batch)[0]  # both views: the photo and its mirror (TTA)
    assert sorted(served) == sorted(expected.labels)
    for label, probability in served.items():
        assert probability == pytest.approx(float(probabilities[expected.labels.index(label)]), abs=1e-4)
