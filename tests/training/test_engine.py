"""Engine pieces: augmentation, metrics, batching, early stopping and `fit`'s choice of final weights."""

from __future__ import annotations

import torch
from torch import nn

from training.augment import AffineRanges, random_affine
from training.engine import EarlyStopping, Schedule, batch_count, fit, tensor_batches
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


def test_tensor_batches_in_order_or_in_a_fresh_seeded_order():
    x, y = torch.arange(10).float()[:, None], torch.arange(10)
    assert [b[1].tolist() for b in tensor_batches(x, y, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    generator = torch.Generator().manual_seed(0)
    first, second = ([t for _, b in tensor_batches(x, y, 4, generator=generator) for t in b.tolist()] for _ in range(2))
    assert sorted(first) == list(range(10)) and first != second, "each call draws a new order"
    assert first == torch.randperm(10, generator=torch.Generator().manual_seed(0)).tolist()
    assert all(torch.equal(bx[:, 0].long(), by) for bx, by in tensor_batches(x, y, 3, generator=generator))
    assert (batch_count(10, 4), batch_count(8, 4), batch_count(0, 4)) == (3, 2, 0)


def _fit_drifting_away(restore_best: bool) -> tuple[float, list[dict]]:
    """Training on targets opposite to the dev set's, so the dev loss is best after epoch 1 and then rises;
    returns the dev loss of the weights `fit` ends with, and the history."""
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    x = torch.randn(32, 2)
    train, dev = (x, (x[:, 0] > 0).long()), (x, (x[:, 0] <= 0).long())
    result = fit(model, train_batches=lambda: [train], dev_batches=lambda: [dev], steps_per_epoch=1,
                 optimizer=torch.optim.SGD(model.parameters(), lr=0.5), schedule=Schedule(None, per_batch=False),
                 epochs=4, device=torch.device("cpu"), early_stopping=EarlyStopping(0, restore_best=restore_best),
                 train_loss=nn.CrossEntropyLoss(), progress=False)
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(dev[0]), dev[1])), result.history


def test_fit_restores_the_best_weights_unless_told_to_keep_the_last():
    best_loss, history = _fit_drifting_away(restore_best=True)
    last_loss, same_history = _fit_drifting_away(restore_best=False)
    assert history == [{**row, "seconds": r["seconds"]} for row, r in zip(same_history, history)]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4], "patience 0: never stops early"
    assert min(r["dev_loss"] for r in history) == history[0]["dev_loss"] < history[-1]["dev_loss"]
    assert round(best_loss, 6) == history[0]["dev_loss"] and round(last_loss, 6) == history[-1]["dev_loss"]
