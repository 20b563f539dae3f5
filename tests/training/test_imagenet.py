"""`python -m training.imagenet`: offline registration, evaluation on the sample photos, error paths, and `choose`
(the dev-set comparison) with the flip TTA it may serve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

from app.kinds.image_classification import ImageClassification
from models.preprocessing import image_to_array, to_tensor
from models.pretrained import lite_preset
from models.registry import DEFAULT_ROOT, ModelRegistry
from models.registry.manifest import sha256_file
from models.runtime import load_model
from training.imagenet import imagenet_labels, main
from training.imagenet_choose import (CANDIDATES, SERVED_BACKEND, Candidate, Scored, pick, promote_choice,
                                      wilson_interval)
from training.imagenet_eval import collect_photos, is_hit, label_from_name, matches
from training.imagenet_sources import convert_torchvision, efficientnet_lite
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


def test_photos_named_by_wordnet_id_are_judged_by_class_index(tmp_path: Path):
    """The 1k layout (`n02012849_crane.JPEG`): the two "crane" classes (bird 134, machine 517) are told apart."""
    tench = (IMAGENET_SAMPLES / "tench.jpg").read_bytes()
    for name in ("n02012849_crane", "n03126707_crane", "n01440764_tench"):
        (tmp_path / f"{name}.JPEG").write_bytes(tench)
    photos = collect_photos(tmp_path)
    assert [(p.label, p.index) for p in photos] == [("tench", 0), ("crane", 134), ("crane", 517)]
    classes = imagenet_labels()
    assert is_hit(classes, 134, photos[1], "strict") and not is_hit(classes, 517, photos[1], "report")
    (tmp_path / "n99999999_nothing.JPEG").write_bytes(tench)
    with pytest.raises(ValueError, match="n99999999 is not the WordNet id of an ImageNet-1k class"):
        collect_photos(tmp_path)


def test_wilson_interval_and_the_choice_rule():
    assert [round(x, 4) for x in wilson_interval(2, 10)] == [0.0567, 0.5098]
    assert wilson_interval(0, 1000)[0] == 0.0 and round(wilson_interval(0, 1000)[1], 4) == 0.0038

    def scored(name: str, top1: int, top5: int, ms: float) -> Scored:
        return Scored(Candidate(name, "bicubic"), "onnxruntime", [],
                      {"top1_misses": top1, "top5_misses": top5, "ms_p50": ms})

    rows = [scored("fast", 50, 20, 20.0), scored("best-but-slow", 30, 10, 60.0), scored("tie-a", 40, 12, 45.0),
            scored("tie-b", 40, 11, 48.0), scored("tie-c", 40, 11, 30.0)]
    assert pick(rows, 50.0).candidate.variant == "tie-c", "top-1, then top-5, then faster"
    assert pick(rows, 70.0).candidate.variant == "best-but-slow"
    assert pick(rows, 10.0) is None
    assert SERVED_BACKEND == ImageClassification.default_backend
    assert len(CANDIDATES) == 8 and {c.preprocessing["size"][0] for c in CANDIDATES} == {224, 240, 260}


def choose_lite2(registry: ModelRegistry) -> str:
    """A 260-px Lite2 version of `registry` (registered here when the store has none)."""
    for version in registry.versions("imagenet"):
        if registry.manifest("imagenet", version).preprocessing["size"] == [260, 260]:
            return version
    source = efficientnet_lite("lite2")
    return registry.register("imagenet", source.network, {
        "kind": "image-classification", "architecture": source.architecture, "labels": imagenet_labels(),
        "preprocessing": source.preprocessing, "metrics": {"dev_top1_error": 0.1},
        "evaluation": {"metric": "dev_top1_error", "higher_is_better": False}, "training": {}, "lineage": {}},
        base_weights=source.base_weights)


def run_choose(store: Path, tmp_path: Path, candidate: str = "lite0-bicubic-flip") -> dict:
    """`choose` on 3 sample photos with one candidate, into `store`; the JSON report."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("volcano.jpg", "tench.jpg", "teapot.jpg"):
        (photos / name).write_bytes((IMAGENET_SAMPLES / name).read_bytes())
    assert main(["--store", str(store), "choose", "--images", str(photos), "--candidate", candidate,
                 "--max-p50-ms", "10000", "--results-dir", str(tmp_path / "results")]) == 0
    return json.loads((tmp_path / "results" / "imagenet_dev.json").read_text())


def test_choose_registers_and_promotes_the_choice_with_its_dev_metrics(store: Path, tmp_path: Path):
    """Against an incumbent evaluated on the 10 samples (same input size), the only refusal is the metric's
    name, which `choose` passes with the dev comparison as the reason."""
    registry = ModelRegistry(store)
    before = next(v for v in registry.versions("imagenet")
                  if registry.manifest("imagenet", v).evaluation.metric == "samples_top1_error_strict")
    registry.promote("imagenet", before, actor="test", force=True)
    report = run_choose(store, tmp_path)
    version = report["outcome"]["version"]
    assert report["outcome"]["chosen"] == "lite0-bicubic-flip" and report["outcome"]["promoted"]
    manifest = registry.verify_version("imagenet", "production")
    assert manifest.version == version != before and before in registry.versions("imagenet"), "old version kept"
    assert manifest.preprocessing == {**lite_preset("lite0", interpolation="bicubic"), "tta": "hflip"}
    [row] = report["candidates"]
    metrics = manifest.metrics
    assert metrics["dev_photos"] == 3 == row["photos"] == len(row["results"])
    assert (metrics["dev_top1_error"], metrics["dev_top5_error"]) == (row["top1_error"], row["top5_error"])
    assert metrics["dev_top5_error"] == 0.0 and metrics["dev_top1_error"] <= 1 / 3
    low, high = metrics["dev_top1_error_ci95"]
    assert low <= metrics["dev_top1_error"] <= high and metrics["dev_sets"]["photos"]["photos"] == 3
    assert manifest.evaluation.metric == "dev_top1_error" and not manifest.evaluation.higher_is_better
    last = registry.history("imagenet")[-1]
    assert (last["event"], last["from"], last["to"], last["forced"]) == ("promote", before, version, True)
    [overridden] = last["overridden"]
    assert overridden.startswith("evaluated by different metrics") and "samples_top1_error_strict" in overridden
    assert last["reason"].startswith("dev-set comparison of 1 candidates on 3 photos")
    text = (tmp_path / "results" / "imagenet_dev.md").read_text()
    assert "- commit:" in text and "| **lite0-bicubic-flip** (chosen) |" in text and version in text
    directory = store / "imagenet" / version
    assert sum(p.stat().st_size for p in directory.iterdir()) < 100_000, "weights by reference, no copy"


def test_served_flip_tta_gives_the_evaluated_probabilities(store: Path, tmp_path: Path, make_client):
    """The service's answer for one photo under the TTA version = what `choose` measured = the mean of the
    softmax of the photo and of its mirror through the network. (Against a 260-px production the 224-px
    candidate is refused as an input change: registered, not promoted, until forced.)"""
    registry = ModelRegistry(store)
    registry.promote("imagenet", choose_lite2(registry), actor="test", force=True)
    before = registry.aliases("imagenet")["production"]
    report = run_choose(store, tmp_path)
    outcome = report["outcome"]
    assert not outcome["promoted"] and registry.aliases("imagenet")["production"] == before
    assert any(r.startswith("input signature differs: preprocessing.size [260, 260] -> [224, 224]")
               for r in outcome["refusals"])
    assert "**not promoted**" in (tmp_path / "results" / "imagenet_dev.md").read_text()
    promotion, refusals = promote_choice(registry, outcome["version"], "test: --force", force=True)
    assert promotion.forced and promotion.version == outcome["version"] and refusals == outcome["refusals"]
    evaluated = next(p for p in report["candidates"][0]["results"] if p["file"] == "teapot.jpg")["top5"]
    data = (IMAGENET_SAMPLES / "teapot.jpg").read_bytes()
    response = make_client().post("/imagenet/top5", files=[("file", ("teapot.jpg", data, "image/jpeg"))])
    assert response.status_code == 200, response.text
    assert response.json()["model"]["version"] == report["outcome"]["version"]
    served = [[t["index"], t["probability"]] for t in response.json()["predictions"][0]["top"]]
    assert [i for i, _ in served] == [i for i, _ in evaluated]
    assert max(abs(p - q) for (_, p), (_, q) in zip(served, evaluated)) <= 1e-6
    model = load_model(ModelRegistry(store), "imagenet", "production", torch.device("cpu"))
    x = to_tensor([image_to_array(data, model.preprocessing, max_pixels=10**8)], model.preprocessing)
    with torch.inference_mode():
        plain = torch.softmax(model.network(x), 1)
        by_hand = (plain + torch.softmax(model.network(x.flip(-1)), 1)) / 2
    assert max(abs(float(by_hand[0, i]) - p) for i, p in served) < 1e-5
    assert max(abs(float(plain[0, i]) - p) for i, p in served) > 1e-3, "the mirror changes the answer"
