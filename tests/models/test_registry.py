"""The registry: round-trip, checksums, unknown architectures, aliases, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.networks import build_network
from models.preprocessing import digit_preset, example_input
from models.registry import (ChecksumMismatchError, InvalidManifestError, InvalidVersionIdError, ModelRegistry,
                             UnknownTaskError, UnknownVersionError, layer_summary)
from models.runtime import load_model
from models.registry.__main__ import main as cli

CPU = torch.device("cpu")


def manifest_fields(arch: str = "lenet5") -> dict:
    return {
        "architecture": {"name": arch, "args": {"num_classes": 10}},
        "labels": [str(i) for i in range(10)],
        "preprocessing": digit_preset(),
        "metrics": {"test_accuracy": 0.5},
        "training": {"seed": 0},
        "lineage": {"dataset": "none"},
    }


def register_random(registry: ModelRegistry, arch: str = "lenet5", seed: int = 0) -> tuple[str, torch.nn.Module]:
    torch.manual_seed(seed)
    network = build_network(arch)
    return registry.register("digits", network, manifest_fields(arch)), network


def test_round_trip_restores_identical_weights_and_manifest(tmp_path: Path):
    registry = ModelRegistry(tmp_path)
    version, network = register_random(registry, "seed000")
    loaded = load_model(registry, "digits", version, CPU)
    for key, value in network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value)
    manifest = registry.manifest("digits", version)
    assert manifest.version == version and manifest.parameters == 130_324
    assert manifest.preprocessing["digit_normalization"] is True
    assert len(manifest.weights.sha256) == 64
    x = torch.randn(2, 1, 28, 28)
    network.eval()
    assert torch.allclose(loaded.network(x), network(x))


def test_checksum_mismatch_is_refused(tmp_path: Path):
    registry = ModelRegistry(tmp_path)
    version, _ = register_random(registry)
    weights = tmp_path / "digits" / version / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        load_model(registry, "digits", version, CPU)
    with pytest.raises(ChecksumMismatchError):
        registry.promote("digits", version)


def rename_architecture(registry: ModelRegistry, version: str, name: str) -> None:
    """Edit a stored manifest by hand, as a careless user or a bad merge might."""
    path = registry.version_dir("digits", version) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["architecture"]["name"] = name
    path.write_text(json.dumps(manifest))


def test_unknown_architecture_is_refused(tmp_path: Path):
    registry = ModelRegistry(tmp_path)
    version, _ = register_random(registry)
    rename_architecture(registry, version, "resnet9000")
    with pytest.raises(InvalidManifestError, match="unknown architecture 'resnet9000'; valid: .*cnn2, .*lenet5"):
        load_model(registry, "digits", version, CPU)


def test_weights_of_another_architecture_are_refused(tmp_path: Path):
    registry = ModelRegistry(tmp_path)
    version, _ = register_random(registry, "cnn2")
    rename_architecture(registry, version, "lenet5")
    with pytest.raises(InvalidManifestError, match="do not fit lenet5"):
        load_model(registry, "digits", version, CPU)


def test_promote_moves_the_alias_and_resolve_follows(tmp_path: Path):
    registry = ModelRegistry(tmp_path)
    first, _ = register_random(registry, seed=1)
    second, _ = register_random(registry, seed=2)
    assert first != second
    registry.promote("digits", first)
    assert registry.resolve("digits", "production") == first
    registry.promote("digits", second)
    assert registry.resolve("digits") == second
    registry.promote("digits", first, alias="canary")
    assert registry.aliases("digits") == {"production": second, "canary": first}
    assert not list((tmp_path / "digits").glob("*.tmp")), "no temp files left behind"


def test_lookup_errors_name_the_valid_choices(tmp_path: Path):
    registry = ModelRegistry(tmp_path)
    version, _ = register_random(registry)
    registry.promote("digits", version)
    with pytest.raises(UnknownTaskError, match="valid: digits$"):
        registry.versions("speech")
    with pytest.raises(UnknownVersionError, match=version):
        registry.resolve("digits", "nope")
    for bad in ("../digits", "a/b", ".hidden", ""):
        with pytest.raises(InvalidVersionIdError):
            registry.resolve("digits", bad)


def test_layer_summary_lists_shapes_and_parameters():
    summary = layer_summary(build_network("lenet5"), example_input(digit_preset()))
    assert summary["total_parameters"] == 61_706
    first = summary["layers"][0]
    assert first == {"name": "features.0", "type": "Conv2d", "output_shape": [-1, 6, 28, 28], "parameters": 156}
    assert summary["layers"][-1]["output_shape"] == [-1, 10]
    assert sum(row["parameters"] for row in summary["layers"]) == 61_706


def test_committed_production_model_verifies():
    registry = ModelRegistry()
    manifest = registry.verify_version("digits", "production")
    assert manifest.kind == "image-classification"
    assert manifest.metrics["test_accuracy"] >= 0.994
    for field in ("report", "confusion_matrix"):
        assert field in manifest.metrics
    assert {"config", "seed", "epochs_run", "wall_seconds", "device"} <= manifest.training.keys()
    assert {"files", "code_commit"} <= manifest.lineage.keys()


def test_cli_list_show_promote_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    registry = ModelRegistry(tmp_path)
    first, _ = register_random(registry, seed=1)
    second, _ = register_random(registry, seed=2)
    assert cli(["--store", str(tmp_path), "promote", "digits", second]) == 0
    assert cli(["--store", str(tmp_path), "list", "digits"]) == 0
    out = capsys.readouterr().out
    assert f"{second}  [production]" in out and first in out
    assert cli(["--store", str(tmp_path), "show", "digits"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == second
    assert cli(["--store", str(tmp_path), "verify"]) == 0
    (tmp_path / "digits" / first / "weights.safetensors").write_bytes(b"corrupt")
    assert cli(["--store", str(tmp_path), "verify"]) == 1
    assert "FAILED  digits/" + first in capsys.readouterr().out
    assert cli(["--store", str(tmp_path), "promote", "digits", "missing"]) == 2
