"""How an image classifier trained by `training.images` is scored: top-k errors, the per-class report,
the confusion matrix, the misclassified images and the confidence threshold for "unknown".

Every figure is computed from class probabilities of images preprocessed exactly as the service does
(`predict_paths`: the manifest preset's decode, resize and crop, then its mean/std).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.imaging import TRUSTED_MAX_PIXELS
from models.preprocessing import image_to_array, to_tensor
from models.tta import class_probabilities, tta_mode
from training.metrics import classification_report, confusion_matrix

MISCLASSIFIED_IN_MANIFEST = 100  # the manifest lists at most this many misclassified images (all are counted)


def topk_errors(probabilities: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Top-1 and top-3 error (top-3 means top-min(3, classes))."""
    top3 = probabilities.topk(min(3, probabilities.shape[1]), dim=1).indices
    return {"top1_error": round(float((top3[:, 0] != targets).float().mean()), 4),
            "top3_error": round(float(1 - (top3 == targets[:, None]).any(1).float().mean()), 4)}


def misclassified(paths: list[Path], probabilities: torch.Tensor, targets: torch.Tensor, labels: list[str],
                  root: Path) -> list[dict[str, Any]]:
    """Every image whose top-1 label is wrong, with its true label and top 3 (paths relative to `root`)."""
    values, indices = probabilities.topk(min(3, probabilities.shape[1]), dim=1)
    return [{"photo": str(p.relative_to(root)) if p.is_relative_to(root) else str(p), "label": labels[int(t)],
             "top3": [[labels[i], round(v, 4)] for v, i in zip(vals.tolist(), idx.tolist())]}
            for p, t, vals, idx in zip(paths, targets, values, indices) if int(idx[0]) != int(t)]


def unknown_threshold(probabilities: torch.Tensor, targets: torch.Tensor, quantile: float) -> float:
    """Confidence below which a prediction is flagged unknown: a low quantile of the confidences of the
    correctly classified validation photos (so about `quantile` of good predictions get flagged)."""
    confidence, predicted = probabilities.max(1)
    good = confidence[predicted == targets]
    return round(float(torch.quantile(good, quantile)) if len(good) else 0.5, 4)


@torch.inference_mode()
def predict_paths(network: nn.Module, paths: list[Path], preset: dict[str, Any], *, batch_size: int = 64,
                  device: torch.device | None = None) -> torch.Tensor:
    """Class probabilities (N x classes, CPU) of the images at `paths`, decoded and preprocessed as the service
    does and under the preset's test-time augmentation (`models.tta`), in batches of `batch_size`."""
    network.eval()
    rows = []
    for start in range(0, len(paths), batch_size):
        arrays = [image_to_array(p.read_bytes(), preset, max_pixels=TRUSTED_MAX_PIXELS)
                  for p in paths[start : start + batch_size]]
        batch = to_tensor(arrays, preset)
        rows.append(class_probabilities(network, batch if device is None else batch.to(device), tta_mode(preset)).cpu())
    return torch.cat(rows)


@dataclass(frozen=True)
class SplitScore:
    """One split's scores: errors (top1_error, top3_error, loss), report, confusion matrix, misclassified."""

    name: str
    errors: dict[str, float]
    report: dict[str, Any]
    matrix: torch.Tensor
    missed: list[dict[str, Any]]

    def headline(self) -> dict[str, Any]:
        """The scalar metrics of this split, prefixed with its name (`validation_top1_error`, ...)."""
        return {f"{self.name}_top1_error": self.errors["top1_error"],
                f"{self.name}_top3_error": self.errors["top3_error"],
                f"{self.name}_loss": self.errors["loss"], f"{self.name}_accuracy": self.report["accuracy"]}


def score_split(name: str, probabilities: torch.Tensor, targets: torch.Tensor, paths: list[Path], labels: list[str],
                root: Path) -> SplitScore:
    """Errors, per-class report, confusion matrix and misclassified images of one split."""
    matrix = confusion_matrix(targets, probabilities.argmax(1), len(labels))
    errors = {**topk_errors(probabilities, targets),
              "loss": round(float(nn.functional.nll_loss(probabilities.clamp_min(1e-12).log(), targets)), 4)}
    return SplitScore(name, errors, classification_report(matrix, labels), matrix,
                      misclassified(paths, probabilities, targets, labels, root))


@dataclass
class Trained:
    """What a recipe of `training.images` hands back: the network to register (eval mode, on the CPU) with its
    manifest fields, its history rows, and the class probabilities it gives each split ("validation", "test")."""

    network: nn.Module
    architecture: dict[str, Any]
    preprocessing: dict[str, Any]
    inference: dict[str, bool]
    history: list[dict[str, Any]]
    probabilities: dict[str, torch.Tensor]
    label: str  # the version id's suffix
    curve_title: str
    training: dict[str, Any]  # extra fields of the manifest's `training` block
    lineage: dict[str, Any]  # extra fields of its `lineage` block
    summary: dict[str, Any]  # extra fields of the printed summary
    result: Any = None  # the `training.engine.FitResult` when one fit made the network
    base_weights: dict[str, Any] | None = None
