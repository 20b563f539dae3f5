"""`python -m training.images` on image folders it makes itself: a scratch run registers a task that the
live service serves at once (no restart); splits, resume, bad folders, and the transfer recipe on a few images."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import Settings
from models.image_presets import rgb_preset
from models.networks import build_network
from models.optimize import fold_batchnorm
from models.registry import ModelRegistry
from training.image_folder import load_folder
from models.runtime import load_model
from training.components_finetune import serving_tensor
from training.images import main
from training.images_scratch import channel_stats, decode_images
from tests.training.resume import assert_resume_matches_uninterrupted

# Solid colours, each image a random shade of its class's colour with pixel noise: easy for 3 epochs.
COLOURS = {"blue": (40, 60, 210), "green": (40, 190, 60), "red": (210, 40, 40)}
SCRATCH = ["--recipe", "scratch", "--epochs", "3", "--batch-size", "8", "--no-progress", "--seed", "0"]


def make_folder(root: Path, per_class: int = 12, splits: tuple[str, ...] = ("train",), size: int = 32) -> Path:
    """root/<split>/<colour>/NN.{png,jpg}: `per_class` noisy solid-colour images per class and split."""
    rng = np.random.default_rng(0)
    for split in splits:
        for name, rgb in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                shade = np.array(rgb) + rng.integers(-30, 31, 3)
                pixels = np.clip(shade + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
                suffix, kind = (".png", "PNG") if i % 2 else (".jpg", "JPEG")
                Image.fromarray(pixels).save(folder / f"{i:02d}{suffix}", format=kind)
    return root


def test_scratch_run_registers_a_task_the_live_service_serves_without_restart(tmp_path: Path, store: Path):
    data = make_folder(tmp_path / "colours")
    client = TestClient(create_app(Settings(store_dir=store, device="cpu")), raise_server_exceptions=False)
    probe = data / "train" / "red" / "00.jpg"
    try:
        with client:
            before = client.post("/models/shapes/predict",
                                 files=[("file", (probe.name, probe.read_bytes(), "image/jpeg"))])
            assert before.status_code == 404, before.text
            assert main(["--task", "shapes", "--data-dir", str(data), *SCRATCH, "--limit", "10", "--store", str(store),
                         "--out-dir", str(tmp_path / "run"), "--promote"]) == 0
            manifest = ModelRegistry(store).verify_version("shapes", "production")
            assert manifest.kind == "image-classification" and manifest.title == "shapes"
            assert manifest.labels == ["blue", "green", "red"]
            assert manifest.architecture.name == "small-resnet" and manifest.version.endswith("-small-resnet-s0")
            preset = manifest.preprocessing
            assert {k: preset[k] for k in ("kind", "size", "resize", "interpolation")} == \
                {"kind": "rgb", "size": [32, 32], "resize": 32, "interpolation": "bilinear"}
            metrics = manifest.metrics
            assert metrics["images"] == {"train": 24, "validation": 3, "test": 3}, "10 per class: 8 / 1 / 1"
            assert metrics["evaluated_on"] == "test" and len(metrics["confusion_matrix"]) == 3
            assert {"validation_accuracy", "test_accuracy", "test_top1_error", "test_top3_error"} <= set(metrics)
            assert set(metrics["report"]["per_class"]) == set(COLOURS)
            baseline = metrics["prediction_baseline"]  # the drift check's reference: the test split's top-1 mix
            assert baseline["examples"] == 3 and set(baseline["class_mix"]) == set(COLOURS)
            assert sum(baseline["class_mix"].values()) == pytest.approx(1, abs=1e-4)
            assert 0 < baseline["mean_confidence"] <= 1
            assert manifest.training["config"]["recipe"] == "scratch" and manifest.training["epochs_run"] == 3
            assert manifest.lineage["file_count"] == 30 and len(manifest.lineage["files"]) == 30
            assert {"learning_curves.png", "confusion_matrix.png", "history.json"} <= set(manifest.artifacts)

            files = [("file", (p.name, p.read_bytes(), "image/png")) for p in
                     (data / "train" / name / "01.png" for name in COLOURS)]
            response = client.post("/models/shapes/predict", files=files)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model"] == {"task": "shapes", "version": manifest.version}
            assert [p["label"] for p in body["predictions"]] == list(COLOURS), body
            assert client.get("/models").status_code == 200
            assert "shapes" in [t["task"] for t in client.get("/models").json()["tasks"]]
    finally:
        gc.unfreeze()  # the app froze the heap after preloading (Settings.gc_freeze)


def test_training_images_are_decoded_exactly_as_the_service_decodes_them(tmp_path: Path):
    from models.imaging import TRUSTED_MAX_PIXELS
    from models.preprocessing import image_to_array, to_tensor
    from training.images_scratch import inputs

    data = make_folder(tmp_path / "c", per_class=2, size=40)  # 40 px: resized to 32 by the preset
    paths = sorted((data / "train").rglob("*.*"))
    preset = rgb_preset(32, 32, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    served = to_tensor([image_to_array(p.read_bytes(), preset, max_pixels=TRUSTED_MAX_PIXELS) for p in paths], preset)
    cached = decode_images(paths, preset, progress=False, desc="t")
    assert cached.dtype == np.uint8 and torch.equal(inputs(cached, preset), served)
    mean, std = channel_stats(cached)
    assert mean[2] > mean[1] > 0 and all(s > 0 for s in std)


def test_splits_come_from_folders_or_a_seeded_stratified_split(tmp_path: Path):
    drawn = load_folder(make_folder(tmp_path / "a"), val_fraction=0.25, test_fraction=0.0, seed=3)
    assert drawn.test is None and len(drawn.validation) == 9 and len(drawn.train) == 27
    assert sorted(drawn.validation.targets) == [0, 0, 0, 1, 1, 1, 2, 2, 2], "stratified"
    again = load_folder(tmp_path / "a", val_fraction=0.25, test_fraction=0.0, seed=3)
    assert again.validation.paths == drawn.validation.paths, "seeded"
    assert not set(drawn.train.paths) & set(drawn.validation.paths)
    folders = load_folder(make_folder(tmp_path / "b", per_class=2, splits=("train", "validation", "test")),
                          val_fraction=0.1, test_fraction=0.1, seed=0)
    assert folders.counts() == {"train": 6, "validation": 6, "test": 6}
    assert folders.sources == {"train": "train/", "validation": "validation/", "test": "test/"}


def test_bad_folders_fail_early_naming_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    args = ["--task", "x", *SCRATCH, "--no-register", "--out-dir", str(tmp_path / "run")]
    assert main([*args, "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "one" / "train" / "cat").mkdir(parents=True)
    assert main([*args, "--data-dir", str(tmp_path / "one")]) == 2
    assert "at least two class folders" in capsys.readouterr().err
    (tmp_path / "one" / "train" / "dog").mkdir()
    assert main([*args, "--data-dir", str(tmp_path / "one")]) == 2
    assert "no images" in capsys.readouterr().err
    make_folder(tmp_path / "extra", per_class=2, splits=("train", "val"))
    (tmp_path / "extra" / "val" / "purple").mkdir()
    assert main([*args, "--data-dir", str(tmp_path / "extra")]) == 2
    assert "train/ lacks: purple" in capsys.readouterr().err
    assert main([*args, "--data-dir", str(tmp_path / "extra"), "--views", "3"]) == 2
    assert "--views does not apply to recipe 'scratch'" in capsys.readouterr().err


def test_scratch_resume_after_interruption_matches_an_uninterrupted_run(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    data = make_folder(tmp_path / "c", per_class=6)
    args = ["--task", "c", "--data-dir", str(data), *SCRATCH, "--width", "8"]
    assert_resume_matches_uninterrupted(main, args, "c", tmp_path, monkeypatch)
    history = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]


def test_small_resnet_folds_its_batch_norms_for_serving():
    torch.manual_seed(0)
    network = build_network("small-resnet", num_classes=4, width=8, depth=2).eval()
    for module in network.modules():  # non-trivial statistics, so folding has something to do
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 2)
    folded = fold_batchnorm(network)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(network(x), folded(x), atol=1e-4)
    assert network(torch.randn(2, 3, 20, 24)).shape == (2, 4), "any input size the pooling takes"


def test_transfer_recipe_runs_on_a_tiny_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data = make_folder(tmp_path / "c", per_class=3, splits=("train", "val"))
    assert main(["--task", "tiny", "--data-dir", str(data), "--limit", "2", "--views", "1", "--epochs", "2",
                 "--unfreeze", "1", "--finetune-epochs", "1", "--test-fraction", "0", "--store", str(tmp_path / "s"),
                 "--out-dir", str(tmp_path / "run"), "--no-progress", "--promote", "--title", "Tiny colours",
                 "--tta", "flips"]) == 0
    assert "validation top-1 error" in capsys.readouterr().out
    manifest = ModelRegistry(tmp_path / "s").verify_version("tiny", "production")
    assert manifest.preprocessing["tta"] == "flips", "the views it was scored with are the ones served"
    model = load_model(ModelRegistry(tmp_path / "s"), "tiny", "production", torch.device("cpu"))
    validation = load_folder(data, val_fraction=0.1, test_fraction=0, seed=0, limit=2).validation
    served = model.predict_proba(serving_tensor(validation.paths, model.preprocessing))
    loss = torch.nn.functional.nll_loss(served.clamp_min(1e-12).log(), torch.tensor(validation.targets))
    assert float(loss) == pytest.approx(manifest.metrics["validation_loss"], abs=2e-4)
    assert manifest.title == "Tiny colours" and manifest.labels == list(COLOURS)
    assert manifest.architecture.args == {"variant": "lite0", "num_classes": 3}
    assert manifest.preprocessing["size"] == [224, 224] and manifest.base_weights is not None
    assert manifest.serving.batch_overrides() == {"max_batch_size": 4, "concurrency": 2}
    assert manifest.training["recipe"] == "transfer" and manifest.training["epochs_run"] == 3
    assert manifest.metrics["images"] == {"train": 6, "validation": 6} and "test_accuracy" not in manifest.metrics
