"""`python -m training.imagenet`: offline registration, evaluation on the sample photos, error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

from models.registry import DEFAULT_ROOT, ModelRegistry
from models.registry.manifest import sha256_file
from models.runtime import load_model
from training.imagenet import imagenet_labels, main
from training.imagenet_eval import label_from_name, matches
from training.imagenet_sources import convert_torchvision
from tests.conftest import IMAGENET_SAMPLES


def test_add_offline_lite_registers_a_verified_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["--store", str(tmp_path), "add", "--arch", "efficientnet_lite0", "--promote", "--no-samples",
                 "--version", "v1"]) == 0
    assert "4,652,008 parameters" in capsys.readouterr().out
    registry = ModelRegistry(tmp_path)
    manifest = registry.verify_version("imagenet", "production")  # sha256 of the package's file checked too
    base = manifest.base_weights
    assert base.sha256 == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    assert manifest.lineage["source"]["sha256"] == base.sha256
    assert manifest.metrics["published_top1_accuracy"] == 75.1
    assert "top1_error" not in manifest.metrics, "no samples scored, no headline error"
    assert manifest.preprocessing == {"kind": "rgb", "size": [224, 224], "resize": 256, "interpolation": "bilinear",
                                      "channels": 3, "mean": [127 / 255] * 3, "std": [128 / 255] * 3}
    assert manifest.labels == imagenet_labels() and manifest.labels[0] == "tench, Tinca tinca"
    assert manifest.kind == "image-classification" and manifest.parameters == 4_652_008
    assert manifest.serving.batch_overrides() == {"max_batch_size": 4, "concurrency": 2}
    assert (manifest.serving.default_top_k, manifest.serving.max_top_k) == (5, 20)
    assert (tmp_path / "imagenet" / "v1" / "weights.safetensors").stat().st_size < 1000, "nothing copied"


def test_add_scores_the_sample_photos_into_headline_metrics(tmp_path: Path):
    assert main(["--store", str(tmp_path), "add", "--arch", "efficientnet_lite0", "--promote",
                 "--samples", str(IMAGENET_SAMPLES)]) == 0
    manifest = ModelRegistry(tmp_path).manifest("imagenet", "production")
    assert manifest.version.endswith("-efficientnet_lite0"), "the registry names the version: <UTC time>-<arch>"
    metrics = manifest.metrics
    assert metrics["samples"]["photos"] == 10 and not any(k.startswith("ms_") for k in metrics["samples"])
    assert metrics["top1_error"] == metrics["samples_top1_error_strict"] == metrics["samples"]["top1_error_strict"]
    assert metrics["top5_error"] == metrics["samples_top5_error_strict"] == 0.0
    assert metrics["samples_top1_error_report"] <= metrics["top1_error"]


def test_evaluate_on_the_sample_photos(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "eval.json"
    assert main(["--store", str(DEFAULT_ROOT), "evaluate", "--images", str(IMAGENET_SAMPLES), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "top-1 err" in text and "misses under the report rule" in text
    [row] = json.loads(out.read_text())
    assert row["photos"] == 10
    assert row["top5_error_report"] == row["top5_error_strict"] == 0.0  # volcano, tench, teapot, ... all in the top-5
    assert row["top1_error_report"] <= 0.2


def test_evaluate_accepts_an_image_folder_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    for name in ("volcano", "teapot"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        (tmp_path / "photos" / name / "1.jpg").write_bytes((IMAGENET_SAMPLES / f"{name}.jpg").read_bytes())
    assert main(["--store", str(DEFAULT_ROOT), "evaluate", "--images", str(tmp_path / "photos")]) == 0
    assert "2 photos in" in capsys.readouterr().out


def test_torchvision_weights_missing_offline_names_file_and_cache(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("MODELHOUSE_OFFLINE", "1")  # the real lookup runs; only the download is switched off
    assert main(["--store", str(tmp_path / "store"), "add", "--arch", "alexnet"]) == 2
    err = capsys.readouterr().err
    assert "alexnet-owt-7be5be79.pth" in err and str(tmp_path / "torch" / "hub" / "checkpoints") in err
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in err
    assert not (tmp_path / "store" / "imagenet").exists() or not any((tmp_path / "store" / "imagenet").iterdir())


def test_unknown_arch_and_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["--store", str(tmp_path), "add", "--arch", "lenet9"]) == 2
    err = capsys.readouterr().err
    assert "unknown architecture 'lenet9'" in err and "efficientnet_lite0" in err and "resnet18" in err
    assert main(["--store", str(tmp_path), "evaluate", "--images", str(tmp_path / "none")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_torchvision_conversion_drops_aux_heads_and_round_trips(tmp_path: Path):
    """A googlenet checkpoint as published (with auxiliary heads) becomes a registry version without them."""
    weights = torchvision.models.GoogLeNet_Weights.DEFAULT
    torch.manual_seed(0)
    published = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False).state_dict()
    source = convert_torchvision("googlenet", weights, published, "f" * 64)
    assert source.architecture == {"name": "torchvision", "args": {"model": "googlenet", "kwargs": {
        "transform_input": True, "aux_logits": False, "init_weights": False}}}
    assert source.preprocessing["size"] == [224, 224] and source.preprocessing["resize"] == 256
    assert source.published["top1_accuracy"] == weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    registry = ModelRegistry(tmp_path)
    manifest = {"kind": "image-classification", "architecture": source.architecture, "labels": imagenet_labels(),
                "preprocessing": source.preprocessing, "metrics": {}, "training": {},
                "lineage": {"source": source.source}}
    version = registry.register("imagenet", source.network, manifest)
    loaded = load_model(registry, "imagenet", version, torch.device("cpu"))
    assert loaded.manifest.parameters == 6_624_904 == sum(p.numel() for p in source.network.parameters())
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(loaded.network(x), source.network(x))
    assert sha256_file(tmp_path / "imagenet" / version / "weights.safetensors") == loaded.manifest.weights.sha256


def test_matching_rules_and_labels_from_file_names():
    assert label_from_name("Volcano_2") == "volcano" and label_from_name("great_white_shark") == "great white shark"
    assert matches("plate rack", "plate", "report") and not matches("plate rack", "plate", "strict")
    assert matches("gasmask, respirator, gas helmet", "gasmask", "strict")
    assert not matches("tray", "plate", "report")
    with pytest.raises(ValueError, match="valid: report, strict"):
        matches("x", "x", "fuzzy")
