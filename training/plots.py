"""Learning-curve and confusion-matrix pictures (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # trainers run headless
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def plot_learning_curves(history: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Train vs dev loss and accuracy per epoch, side by side."""
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "dev"):
        ax_loss.plot(epochs, [row[f"{split}_loss"] for row in history], marker=".", label=split)
        ax_acc.plot(epochs, [row[f"{split}_accuracy"] for row in history], marker=".", label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion_matrix(matrix: torch.Tensor, labels: list[str], path: Path, title: str = "") -> Path:
    """Counts per (true, predicted) cell, with the numbers written in."""
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix.numpy(), cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    peak = int(matrix.max()) if matrix.numel() else 0
    for (row, col), count in zip(torch.cartesian_prod(torch.arange(len(labels)), torch.arange(len(labels))).tolist(), matrix.flatten().tolist()):
        if count:
            ax.text(col, row, str(count), ha="center", va="center", fontsize=7, color="white" if count > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
