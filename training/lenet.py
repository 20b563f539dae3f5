"""Train a digit classifier on MNIST and register it: `python -m training.lenet [--promote]`.

Recipe defaults (LeNet-5, SGD+Nesterov, one-cycle LR, batched affine augmentation)
were chosen by `bench` runs recorded in the README; `--help` lists every knob.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.devices import DEVICE_CHOICES, select_device
from models.networks import DIGIT_ARCHITECTURES, build_network, count_parameters
from models.preprocessing import MNIST_MEAN, MNIST_STD, digit_preset
from models.registry import DEFAULT_ROOT
from models.registry.synced import STORE_HELP, open_registry, store_argument
from models.registry.drift import prediction_baseline
from training.artifacts import training_record, write_run_artifacts
from training.augment import AffineRanges, random_affine
from training.cli import run_cli, run_dir
from training.data.mnist import MnistArrays, default_data_dir, load_mnist, split_train_dev
from training.engine import (OPTIMIZERS, SCHEDULERS, EarlyStopping, FitResult, batch_count, build_optimizer,
                             build_schedule, evaluate, fit, load_checkpoint)
from training.metrics import classification_report, confusion_matrix, format_report
from training.runtime import start_run

log = logging.getLogger("training.lenet")
TASK = "digits"
LABELS = [str(d) for d in range(10)]
# How the service offers the digits: the best three by default, all ten at most.
SERVING = {"default_top_k": 3, "max_top_k": 10}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.lenet", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder with the MNIST idx files")
    p.add_argument("--arch", choices=DIGIT_ARCHITECTURES, default="lenet5")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    p.add_argument("--lr", type=float, default=0.1, help="peak LR for onecycle, initial LR otherwise")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--no-nesterov", dest="nesterov", action="store_false")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--scheduler", choices=SCHEDULERS, default="onecycle")
    p.add_argument("--plateau-patience", type=int, default=5)
    p.add_argument("--plateau-factor", type=float, default=0.1)
    p.add_argument("--early-stopping", type=int, default=8, metavar="PATIENCE", help="epochs without dev-loss gain; 0 disables")
    p.add_argument("--min-delta", type=float, default=1e-4)
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--rotation", type=float, default=10.0, help="degrees, +-")
    p.add_argument("--translate", type=float, default=0.1, help="fraction, +-")
    p.add_argument("--scale", type=float, default=0.1, help="fraction, +-")
    p.add_argument("--shear", type=float, default=10.0, help="degrees, +-")
    p.add_argument("--dev-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    p.add_argument("--limit", type=int, default=0, help="use only N training (and N dev/test) images: smoke tests")
    p.add_argument("--out-dir", type=Path, default=None, help="run folder (default runs/lenet/<time>)")
    p.add_argument("--resume", type=Path, default=None, help="checkpoint.pt of an interrupted run")
    p.add_argument("--store", type=store_argument, default=str(DEFAULT_ROOT), help=STORE_HELP)
    p.add_argument("--promote", action="store_true", help="make the new version production")
    p.add_argument("--no-register", dest="register", action="store_false")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def to_inputs(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x 28 x 28 -> float N x 1 x 28 x 28 in [0, 1]."""
    return images.unsqueeze(1).float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - MNIST_MEAN) / MNIST_STD


def batches(data: MnistArrays, indices: torch.Tensor, batch_size: int, *, generator: torch.Generator | None = None,
            augment: AffineRanges | None = None):
    """Yield normalised (inputs, targets); shuffled and augmented when a generator is given."""
    order = indices[torch.randperm(len(indices), generator=generator)] if generator is not None else indices
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        x = to_inputs(data.images[index])
        if augment is not None and generator is not None:
            x = random_affine(x, augment, generator)
        yield normalize(x), data.labels[index]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate on the test set, write plots/history, register. Returns a summary dict."""
    start = start_run(args.seed, args.threads)
    generator = start.generator
    device = select_device(args.device)
    data = load_mnist(args.data_dir)
    train_idx, dev_idx = split_train_dev(data["train"], args.dev_fraction, generator)
    test_idx = torch.arange(len(data["test"].labels))
    if args.limit:
        train_idx, dev_idx, test_idx = train_idx[: args.limit], dev_idx[: args.limit], test_idx[: args.limit]
    out_dir = run_dir(args.out_dir, "lenet")

    model = build_network(args.arch).to(device)
    optimizer = build_optimizer(args.optimizer, model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                momentum=args.momentum, nesterov=args.nesterov)
    steps = batch_count(len(train_idx), args.batch_size)
    schedule = build_schedule(args.scheduler, optimizer, epochs=args.epochs, steps_per_epoch=steps, max_lr=args.lr,
                              patience=args.plateau_patience, factor=args.plateau_factor)
    augment = AffineRanges(args.rotation, args.translate, args.scale, args.shear) if args.augment else None
    log.info("%s: %d parameters, %d train / %d dev / %d test images, device %s", args.arch,
             count_parameters(model), len(train_idx), len(dev_idx), len(test_idx), device)
    result = fit(
        model,
        train_batches=lambda: batches(data["train"], train_idx, args.batch_size, generator=generator, augment=augment),
        dev_batches=lambda: batches(data["train"], dev_idx, 1000),
        steps_per_epoch=steps, optimizer=optimizer, schedule=schedule, epochs=args.epochs, device=device,
        early_stopping=EarlyStopping(args.early_stopping, args.min_delta),
        train_loss=nn.CrossEntropyLoss(label_smoothing=args.label_smoothing), progress=args.progress,
        checkpoint=out_dir / "checkpoint.pt", generator=generator,
        resume_from=load_checkpoint(args.resume) if args.resume else None,
    )
    test = evaluate(model, batches(data["test"], test_idx, 1000), device=device)
    matrix = confusion_matrix(test["targets"], test["logits"].argmax(1), len(LABELS))
    report = classification_report(matrix, LABELS)
    print(format_report(report))
    wall = start.elapsed()
    artifacts = write_run_artifacts(out_dir, result.history, title=f"{args.arch} seed {args.seed}", matrix=matrix,
                                    labels=LABELS, matrix_title="MNIST test")
    summary = {
        "test_accuracy": report["accuracy"], "test_loss": round(test["loss"], 6), "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch, "train_seconds": round(result.seconds, 1), "wall_seconds": round(wall, 1),
        "out_dir": str(out_dir), "version": None,
    }
    if args.register:
        manifest = build_manifest(args, report, matrix, torch.softmax(test["logits"], 1), result, data, wall, device,
                                  start.commit)
        registry = open_registry(args.store)
        summary["version"] = registry.register(TASK, model.cpu(), manifest, artifacts=artifacts)
        if args.promote:
            registry.promote(TASK, summary["version"], actor="trainer:lenet")
        log.info("registered %s/%s%s", TASK, summary["version"], " (production)" if args.promote else "")
    print(json.dumps(summary))
    return summary


def build_manifest(args: argparse.Namespace, report: dict[str, Any], matrix: torch.Tensor,
                   probabilities: torch.Tensor, result: FitResult, data: dict[str, MnistArrays], wall: float,
                   device: torch.device, commit: str | None) -> dict[str, Any]:
    """The descriptive manifest fields of a trained digit classifier (the registry fills in the rest);
    `probabilities` are the test set's, profiled as the drift baseline."""
    dataset = "MNIST test (10,000)" if not args.limit else f"MNIST test (first {args.limit})"
    return {
        "kind": "image-classification",
        "architecture": {"name": args.arch, "args": {"num_classes": 10}},
        "labels": LABELS,
        "preprocessing": digit_preset(digit_normalization=True),
        "metrics": {
            "dataset": dataset,
            "test_accuracy": report["accuracy"],
            "report": report,
            "confusion_matrix": matrix.tolist(),
            "best_dev_loss": round(min(r["dev_loss"] for r in result.history), 6),
            "best_dev_accuracy": max(r["dev_accuracy"] for r in result.history),
            "prediction_baseline": prediction_baseline(probabilities.numpy(), LABELS, dataset=dataset),
        },
        "evaluation": {"metric": "test_accuracy", "higher_is_better": True},
        "training": training_record(args, device=device, wall_seconds=wall, result=result),
        "lineage": {
            "dataset": "mnist",
            "files": {**data["train"].files, **data["test"].files},
            "code_commit": commit,
        },
        "serving": SERVING,
    }


def main(argv: list[str] | None = None) -> int:
    """The command line; the exit status is `training.cli.run_cli`'s (0, or 2 with the error on stderr)."""
    return run_cli(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
