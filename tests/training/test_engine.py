"""Engine pieces: augmentation, metrics, early stopping."""

from __future__ import annotations

import torch
from torch import nn

from training.augment import AffineRanges, random_affine
from training.engine import EarlyStopping
from training.metrics import classification_report, confusion_matrix


def test_zero_ranges_are_the_identity():
    images = torch.rand(4, 1, 28, 28)
    out = random_affine(images, AffineRanges(0, 0, 0, 0), torch.Generator().manual_seed(0))
    assert torch.allclose(out, images, atol=1e-5)


def test_augmentation_moves_pixels_but_keeps_the_digit_in_frame():
    images = torch.zeros(64, 1, 28, 28)
    images[:, :, 10:18, 12:16] = 1.0
    out = random_affine(images, AffineRanges(), torch.Generator().manual_seed(0))
    assert not torch.allclose(out, images)
    mass_ratio = out.sum((1, 2, 3)) / images.sum((1, 2, 3))
    assert ((mass_ratio > 0.7) & (mass_ratio < 1.3)).all()


def test_confusion_matrix_and_report():
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    predictions = torch.tensor([0, 1, 1, 1, 2, 0])
    matrix = confusion_matrix(targets, predictions, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    report = classification_report(matrix, ["a", "b", "c"])
    assert report["accuracy"] == round(4 / 6, 6)
    assert report["per_class"]["b"] == {"precision": round(2 / 3, 6), "recall": 1.0, "f1": 0.8, "support": 2}


def test_early_stopping_keeps_the_best_weights():
    model = nn.Linear(2, 1)
    stopper = EarlyStopping(patience=2, min_delta=0.0)
    assert not stopper.update(1, 1.0, model)
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1)
    assert not stopper.update(2, 1.5, model)
    assert stopper.update(3, 1.2, model)
    assert stopper.best_epoch == 1
    assert all(torch.equal(stopper.best_state[k], best[k]) for k in best)
