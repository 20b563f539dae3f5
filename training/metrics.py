"""Classification metrics: accuracy, confusion matrix, per-class precision/recall/F1."""

from __future__ import annotations

from typing import Any

import torch


def confusion_matrix(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows are true classes, columns predicted classes."""
    index = targets.to(torch.int64) * num_classes + predictions.to(torch.int64)
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification_report(matrix: torch.Tensor, labels: list[str]) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support, plus accuracy and macro averages."""
    matrix = matrix.to(torch.float64)
    true_positive = matrix.diag()
    predicted = matrix.sum(0)
    actual = matrix.sum(1)
    precision = torch.where(predicted > 0, true_positive / predicted.clamp(min=1), torch.zeros_like(predicted))
    recall = torch.where(actual > 0, true_positive / actual.clamp(min=1), torch.zeros_like(actual))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(denom))
    per_class = {
        label: {
            "precision": round(float(precision[i]), 6),
            "recall": round(float(recall[i]), 6),
            "f1": round(float(f1[i]), 6),
            "support": int(actual[i]),
        }
        for i, label in enumerate(labels)
    }
    total = float(matrix.sum())
    return {
        "accuracy": round(float(true_positive.sum()) / total, 6) if total else 0.0,
        "macro_precision": round(float(precision.mean()), 6),
        "macro_recall": round(float(recall.mean()), 6),
        "macro_f1": round(float(f1.mean()), 6),
        "per_class": per_class,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a fixed-width table for the console."""
    lines = [f"{'class':>12} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
    for label, row in report["per_class"].items():
        lines.append(f"{label:>12} {row['precision']:9.4f} {row['recall']:9.4f} {row['f1']:9.4f} {row['support']:8d}")
    lines.append(f"{'macro avg':>12} {report['macro_precision']:9.4f} {report['macro_recall']:9.4f} {report['macro_f1']:9.4f}")
    lines.append(f"{'accuracy':>12} {report['accuracy']:9.4f}")
    return "\n".join(lines)
