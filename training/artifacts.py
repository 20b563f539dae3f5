"""What a training run leaves in its folder and records in its manifest's `training` block.

`write_history` writes the per-epoch rows as history.json and history.csv; `write_run_artifacts` adds the
learning curves and, for classifiers, the confusion matrix, and returns the files keyed by the artifact
names the registry stores them under. `training_record` is the `training` block every trainer writes.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from training.cli import run_config
from training.engine import FitResult
from training.plots import plot_confusion_matrix, plot_learning_curves


def write_history(out_dir: Path, history: list[dict[str, Any]]) -> dict[str, Path]:
    """history.json and history.csv (columns: every key, in order of first appearance) in `out_dir`."""
    json_path, csv_path = out_dir / "history.json", out_dir / "history.csv"
    json_path.write_text(json.dumps(history, indent=2))
    columns = list(dict.fromkeys(key for row in history for key in row))
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    return {"history.json": json_path, "history.csv": csv_path}


def write_run_artifacts(out_dir: Path, history: list[dict[str, Any]], *, title: str,
                        matrix: torch.Tensor | None = None, labels: list[str] | None = None,
                        matrix_title: str = "") -> dict[str, Path]:
    """History files and learning curves (titled `title`); with `matrix` and `labels`, the confusion matrix."""
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts = {"learning_curves.png": plot_learning_curves(history, out_dir / "learning_curves.png", title=title)}
    if matrix is not None and labels is not None:
        artifacts["confusion_matrix.png"] = plot_confusion_matrix(matrix, labels, out_dir / "confusion_matrix.png",
                                                                  title=matrix_title)
    return {**artifacts, **write_history(out_dir, history)}


def training_record(args: argparse.Namespace, *, device: torch.device | str, wall_seconds: float,
                    result: FitResult | None = None, **extra: Any) -> dict[str, Any]:
    """The manifest's `training` block: the resolved config, seed, epochs (from `result` when one fit made the
    model), wall time, device, torch version and threads, plus the trainer's `extra` fields."""
    record: dict[str, Any] = {"config": run_config(args), "seed": args.seed}
    if result is not None:
        record.update(epochs_run=result.epochs_run, best_epoch=result.best_epoch, stopped_early=result.stopped_early,
                      train_seconds=round(result.seconds, 1))
    record.update(extra)
    record.update(wall_seconds=round(wall_seconds, 1), device=str(device), torch=torch.__version__,
                  threads=torch.get_num_threads(), cpu=cpu_model())
    return record


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo) and core count, what a wall time was measured on."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"
