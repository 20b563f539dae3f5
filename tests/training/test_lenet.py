"""training.lenet on tiny MNIST subsets: it trains, registers a loadable version, and resumes exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.registry import ModelRegistry
from models.runtime import load_model
from training.lenet import main
from tests.training.resume import assert_resume_matches_uninterrupted

TINY = ["--limit", "256", "--epochs", "1", "--batch-size", "64", "--no-progress"]


@pytest.mark.parametrize("arch", ["lenet5", "lenet5-tanh", "seed000", "cnn2"])
def test_one_epoch_registers_a_loadable_version(arch: str, tmp_path: Path):
    code = main([*TINY, "--arch", arch, "--store", str(tmp_path / "store"), "--out-dir", str(tmp_path / "run"),
                 "--promote"])
    assert code == 0
    registry = ModelRegistry(tmp_path / "store")
    manifest = registry.manifest("digits", "production")
    assert manifest.architecture.name == arch and manifest.version.endswith(f"-{arch}")
    assert manifest.kind == "image-classification"
    assert (manifest.serving.default_top_k, manifest.serving.max_top_k) == (3, 10)
    assert manifest.training["config"]["limit"] == 256 and manifest.training["epochs_run"] == 1
    assert manifest.training["config"]["store"] == str(tmp_path / "store"), "paths are recorded as text"
    assert len(manifest.metrics["confusion_matrix"]) == 10
    baseline = manifest.metrics["prediction_baseline"]
    assert baseline["examples"] == 256 and sum(baseline["class_mix"].values()) == pytest.approx(1, abs=1e-4)
    assert set(manifest.lineage["files"]) >= {"train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    assert set(manifest.artifacts) == {"learning_curves.png", "confusion_matrix.png", "history.json", "history.csv"}
    model = load_model(registry, "digits", "production", torch.device("cpu"))
    assert model.predict_proba(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_same_seed_gives_identical_weights(tmp_path: Path):
    for name in ("a", "b"):
        assert main([*TINY, "--no-register", "--out-dir", str(tmp_path / name)]) == 0
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    args = ["--limit", "256", "--epochs", "3", "--batch-size", "64", "--no-progress", "--early-stopping", "0"]
    assert_resume_matches_uninterrupted(main, args, "digits", tmp_path, monkeypatch)


def test_missing_data_offline_fails_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]):
    import training.data.mnist as mnist

    def offline(directory: Path) -> None:
        raise FileNotFoundError(f"MNIST idx files are not in {directory} and the download failed (offline)")

    monkeypatch.setattr(mnist, "_download", offline)
    assert main([*TINY, "--data-dir", str(tmp_path / "empty"), "--no-register"]) == 2
    assert "MNIST idx files are not in" in capsys.readouterr().err


def test_bad_choices_name_the_valid_ones(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        main(["--arch", "vgg"])
    assert "choose from 'cnn2', 'lenet5', 'lenet5-tanh', 'seed000'" in capsys.readouterr().err
