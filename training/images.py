"""Train an image classifier on any folder and register it: `python -m training.images --task NAME --data-dir DIR`.

DIR is in torchvision's ImageFolder layout: DIR/train/<class>/* and optionally DIR/val/ (or validation/) and
DIR/test/; without them, seeded stratified splits of train (--val-fraction, --test-fraction). Class names
are the sorted folder names. Recipes (--recipe):
  transfer     EfficientNet-Lite0 (ImageNet weights from its pip package, offline): a linear probe on cached
               features of augmented views, then fine-tuning of the head and the last blocks
  cached-head  the linear probe only
  scratch      a small ResNet from random weights for small images (--image-size, default 32), SGD with
               Nesterov momentum, one-cycle LR, label smoothing, random crop + flip augmentation
The new version of task NAME records the serving preprocessing, validation (and test) metrics, the resolved
arguments and the data's hashes; with --promote it is production, which the service then serves at
POST /models/NAME/predict without a restart. `--eval-dir DIR --version V` scores a registered version instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.devices import DEVICE_CHOICES, select_device
from models.registry import DEFAULT_ALIAS, DEFAULT_ROOT
from models.registry.synced import STORE_HELP, open_registry, store_argument
from models.registry.drift import prediction_baseline
from models.registry.store import check_name
from models.runtime import load_model
from models.tta import TTA_MODES
from training import images_scratch, images_transfer
from training.artifacts import training_record, write_run_artifacts
from training.cli import portable_path, run_cli, run_dir
from training.components_finetune import serving_tensor
from training.engine import OPTIMIZERS, SCHEDULERS
from training.image_folder import FolderSplits, dataset_lineage, load_folder, load_split
from training.images_metrics import (MISCLASSIFIED_IN_MANIFEST, SplitScore, Trained, misclassified, score_split,
                                     topk_errors, unknown_threshold)
from training.metrics import format_report
from training.runtime import start_run

log = logging.getLogger("training.images")
SHOWN_MISSES = 30  # misclassified images printed


@dataclass(frozen=True)
class Recipe:
    """A recipe: the method that trains ("transfer" or "scratch") and the defaults of its knobs."""

    method: str
    knobs: dict[str, Any]


# method -> (its knobs, the check of their values, the training function)
METHODS: dict[str, tuple[tuple[str, ...], Callable[[argparse.Namespace], None], Callable[..., Trained]]] = {
    "transfer": (images_transfer.KNOBS, images_transfer.check_args, images_transfer.train_transfer),
    "scratch": (images_scratch.KNOBS, images_scratch.check_args, images_scratch.train_scratch),
}
_PROBE = dict(backbone="efficientnet_lite0", views=10, optimizer="adamw", lr=3e-3, weight_decay=1e-3,
              label_smoothing=0.1, epochs=300, patience=40, batch_size=32)
FINETUNE = dict(unfreeze=2, finetune_epochs=30, finetune_lr=3e-4, finetune_weight_decay=1e-2, finetune_patience=8,
                tta=None)
NO_FINETUNE = dict(unfreeze=0, finetune_epochs=0, finetune_lr=0.0, finetune_weight_decay=0.0, finetune_patience=0,
                   tta=None)
SCRATCH = dict(arch="small-resnet", width=32, depth=1, batchnorm=True, image_size=32, optimizer="sgd", lr=0.2,
               momentum=0.9, weight_decay=5e-4, label_smoothing=0.1, epochs=30, patience=0, batch_size=128,
               scheduler="onecycle", crop_padding=None, flip=True, tta=None, precision="fp32")
RECIPES: dict[str, Recipe] = {
    "transfer": Recipe("transfer", {**_PROBE, **FINETUNE, "vertical_flip": False}),
    "cached-head": Recipe("transfer", {**_PROBE, **NO_FINETUNE, "vertical_flip": False}),
    "scratch": Recipe("scratch", SCRATCH),
}


@dataclass(frozen=True)
class Defaults:
    """What a trainer built on this one (`training.components`) changes: its name, task, data and recipes."""

    prog: str = "python -m training.images"
    description: str = __doc__ or ""
    task: str | None = None  # None: --task is required
    title: str | None = None  # None: the task name
    data_dir: Path | None = None  # None: --data-dir is required
    dataset: str | None = None  # the lineage's dataset name (None: the data folder's name)
    recipes: dict[str, Recipe] = field(default_factory=lambda: RECIPES)
    recipe: str = "transfer"
    test_fraction: float = 0.1
    device: str = "auto"


def build_parser(defaults: Defaults = Defaults()) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=defaults.prog, description=defaults.description,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="recipe defaults:\n" + "\n".join(
                                    f"  {name}: {json.dumps(r.knobs)}" for name, r in defaults.recipes.items()))
    p.add_argument("--task", default=defaults.task, required=defaults.task is None, help="the task to register")
    p.add_argument("--title", default=defaults.title, help="what people call it (default: the task name)")
    p.add_argument("--data-dir", type=Path, default=defaults.data_dir,
                   help="DIR/train/<class>/*, optional DIR/val/ (or validation/) and DIR/test/ (required to train)")
    p.add_argument("--recipe", choices=sorted(defaults.recipes), default=defaults.recipe)
    p.add_argument("--val-fraction", type=float, default=0.1, help="validation drawn from train without val/")
    p.add_argument("--test-fraction", type=float, default=defaults.test_fraction,
                   help="test drawn from train without test/ (0: no test split)")
    knob = p.add_argument_group("knobs (unset: the recipe's default, listed below)")
    knob.add_argument("--epochs", type=int, help="epochs (transfer: of the linear probe)")
    knob.add_argument("--batch-size", type=int)
    knob.add_argument("--optimizer", choices=OPTIMIZERS, help="(transfer: of the linear probe)")
    knob.add_argument("--lr", type=float, help="learning rate (peak LR with one-cycle)")
    knob.add_argument("--weight-decay", type=float)
    knob.add_argument("--label-smoothing", type=float)
    knob.add_argument("--patience", type=int, help="early stopping on the validation loss (0: off)")
    knob.add_argument("--backbone", help="transfer: efficientnet_lite0|1|2 (offline) or a torchvision classifier")
    knob.add_argument("--views", type=int, help="transfer: augmented views per training image")
    knob.add_argument("--vertical-flip", action=argparse.BooleanOptionalAction, help="transfer: flip upside down too")
    knob.add_argument("--unfreeze", type=int, help="transfer: fine-tune the head and this many blocks (0: no stage 2)")
    knob.add_argument("--finetune-epochs", type=int)
    knob.add_argument("--finetune-lr", type=float)
    knob.add_argument("--finetune-weight-decay", type=float)
    knob.add_argument("--finetune-patience", type=int, help="fine-tuning early stopping (0: off)")
    knob.add_argument("--arch", choices=images_scratch.SCRATCH_ARCHITECTURES, help="scratch: the network")
    knob.add_argument("--width", type=int, help="scratch: channels of the first stage (small-resnet: doubling per "
                      "stage; airbench: x4 after it); cifar-lenet: a channel multiplier")
    knob.add_argument("--batchnorm", action=argparse.BooleanOptionalAction,
                      help="scratch: batch norm after each conv (cifar-lenet, keras-cnn, alexnet-small)")
    knob.add_argument("--precision", choices=sorted(images_scratch.PRECISIONS),
                      help="scratch: training forward passes in bf16 (autocast) or fp32; serving is fp32")
    knob.add_argument("--tta", choices=TTA_MODES, help="test-time augmentation, scored and served (models.tta)")
    knob.add_argument("--depth", type=int, help="scratch: residual blocks per stage")
    knob.add_argument("--image-size", type=int, help="scratch: training and serving resolution (square)")
    knob.add_argument("--momentum", type=float, help="scratch: SGD momentum (Nesterov)")
    knob.add_argument("--scheduler", choices=SCHEDULERS, help="scratch: LR schedule")
    knob.add_argument("--crop-padding", type=int, help="scratch: random-crop padding (default: image size / 8)")
    knob.add_argument("--flip", action=argparse.BooleanOptionalAction, help="scratch: random horizontal flips")
    p.add_argument("--unknown-quantile", type=float, default=0.05,
                   help="threshold = this quantile of the confidence of correctly classified validation images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=DEVICE_CHOICES, default=defaults.device)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    p.add_argument("--limit", type=int, default=0, help="at most N images per class from each folder (smoke tests)")
    p.add_argument("--out-dir", type=Path, default=None, help="run folder (default runs/<task>/<time>)")
    p.add_argument("--resume", type=Path, default=None, help="checkpoint.pt of an interrupted run (same arguments)")
    p.add_argument("--store", type=store_argument, default=str(DEFAULT_ROOT), help=STORE_HELP)
    p.add_argument("--promote", action="store_true", help="make the new version production (the service serves it)")
    p.add_argument("--no-register", dest="register", action="store_false")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--eval-dir", type=Path, default=None, help="evaluate --version on DIR/<class>/* and exit")
    p.add_argument("--version", default=DEFAULT_ALIAS, help="version or alias for --eval-dir")
    return p


def resolve_recipe(args: argparse.Namespace, recipes: dict[str, Recipe]) -> Recipe:
    """Fill every knob left unset from the recipe, drop the other method's knobs (an error when one was set),
    and check the values; returns the recipe."""
    recipe = recipes[args.recipe]
    knobs, check, _ = METHODS[recipe.method]
    others = {k for method, (names, _, _) in METHODS.items() if method != recipe.method for k in names} - set(knobs)
    for key in sorted(others):
        if getattr(args, key) is not None:
            raise ValueError(f"--{key.replace('_', '-')} does not apply to recipe {args.recipe!r} ({recipe.method})")
        delattr(args, key)
    for key in knobs:
        if getattr(args, key) is None:
            setattr(args, key, recipe.knobs.get(key))
    check(args)
    return recipe


def serving_block(num_classes: int, image_size: int) -> dict[str, int]:
    """The manifest's serving block: top-3 of all classes by default; large inputs (>= 128 px, a big network's
    forward pass) in small batches, two at a time; small ones under the service's default batch policy."""
    block = {"default_top_k": min(3, num_classes), "max_top_k": num_classes}
    if image_size >= 128:
        block.update(max_batch_size=4, concurrency=2)
    return block


def run(args: argparse.Namespace, defaults: Defaults = Defaults()) -> dict[str, Any]:
    """Load the folder, train with the recipe, score validation (and test), write artifacts, register."""
    if args.data_dir is None:
        raise ValueError("--data-dir is required to train: DIR/train/<class>/*")
    check_name(args.task, "task")
    recipe = resolve_recipe(args, defaults.recipes)
    start = start_run(args.seed, args.threads)
    device = select_device(args.device)
    data = load_folder(args.data_dir, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                       seed=args.seed, limit=args.limit)
    labels = data.labels
    log.info("%s: %d classes, images %s (%s)", args.data_dir, len(labels), data.counts(), data.sources)
    out_dir = run_dir(args.out_dir, args.task, create=False)  # made once training starts: no empty ones
    trained = METHODS[recipe.method][2](args, data, start, device, out_dir)
    splits = {"validation": data.validation, "test": data.test}
    scores = {name: score_split(name, p, torch.tensor(splits[name].targets), splits[name].paths, labels, data.root)
              for name, p in trained.probabilities.items()}
    val, test = scores["validation"], scores.get("test")
    final = test or val
    threshold = unknown_threshold(trained.probabilities["validation"], torch.tensor(data.validation.targets),
                                  args.unknown_quantile)
    print(format_report(final.report))
    print(f"validation top-1 error {val.errors['top1_error']:.1%}, top-3 error {val.errors['top3_error']:.1%}; "
          f"unknown below confidence {threshold}")
    if test is not None:
        print(f"test top-1 error {test.errors['top1_error']:.1%}, top-3 error {test.errors['top3_error']:.1%} "
              f"({len(data.test)} images)")
    for row in final.missed[:SHOWN_MISSES]:
        print(f"  missed {row['photo']}: {row['top3']}")
    if len(final.missed) > SHOWN_MISSES:
        print(f"  ... and {len(final.missed) - SHOWN_MISSES} more misclassified {final.name} images")
    wall = start.elapsed()
    artifacts = write_run_artifacts(out_dir, trained.history, matrix=final.matrix, labels=labels,
                                    title=trained.curve_title, matrix_title=final.name)
    summary = {**val.errors, "validation_photos": len(data.validation),
               **({"test_top1_error": test.errors["top1_error"], "test_accuracy": test.report["accuracy"]}
                  if test else {}),
               "epochs_run": len(trained.history), **trained.summary, "wall_seconds": round(wall, 1), "version": None,
               "unknown_threshold": threshold}
    if args.register:
        manifest = build_manifest(args, recipe, trained, data, scores, threshold, defaults, device, wall, start.commit)
        registry = open_registry(args.store)
        summary["version"] = registry.register(args.task, trained.network, manifest, artifacts=artifacts,
                                               label=trained.label, base_weights=trained.base_weights)
        if args.promote:
            registry.promote(args.task, summary["version"], actor="trainer:images")
        log.info("registered %s/%s%s", args.task, summary["version"], " (production)" if args.promote else "")
    print(json.dumps(summary))
    return summary


def build_manifest(args: argparse.Namespace, recipe: Recipe, trained: Trained, data: FolderSplits,
                   scores: dict[str, SplitScore], threshold: float, defaults: Defaults, device: torch.device,
                   wall: float, commit: str | None) -> dict[str, Any]:
    """The descriptive manifest fields of the new version (the registry fills in the rest)."""
    val, test = scores["validation"], scores.get("test")
    final = test or val
    metrics: dict[str, Any] = {**val.headline(), **(test.headline() if test else {}), "evaluated_on": final.name,
                               "images": data.counts(), "report": final.report,
                               "confusion_matrix": final.matrix.tolist(),
                               "misclassified": final.missed[:MISCLASSIFIED_IN_MANIFEST],
                               "misclassified_count": len(final.missed), "unknown_threshold": threshold,
                               "unknown_quantile": args.unknown_quantile,
                               "prediction_baseline": prediction_baseline(  # the drift check's reference
                                   trained.probabilities[final.name].numpy(), data.labels,
                                   dataset=f"{defaults.dataset or args.data_dir.name} {final.name} split")}
    if test is not None:
        metrics["validation_report"] = val.report
    return {
        "kind": "image-classification", "title": args.title or args.task, "architecture": trained.architecture,
        "labels": data.labels, "preprocessing": trained.preprocessing, "inference": trained.inference,
        "serving": serving_block(len(data.labels), trained.preprocessing["size"][0]),
        "unknown_threshold": threshold, "metrics": metrics,
        "evaluation": {"metric": f"{final.name}_accuracy", "higher_is_better": True},
        "training": training_record(args, device=device, wall_seconds=wall, result=trained.result, recipe=args.recipe,
                                    method=recipe.method, **trained.training),
        "lineage": {"dataset": defaults.dataset or args.data_dir.name, "data_dir": portable_path(args.data_dir),
                    **dataset_lineage(data), **trained.lineage, "code_commit": commit},
    }


def evaluate_dir(args: argparse.Namespace) -> dict[str, Any]:
    """Top-1/top-3 error of a registered version on DIR/<class>/* (classes = the model's labels), each
    image scored alone as the service would."""
    model = load_model(open_registry(args.store, sync=True), args.task, args.version, torch.device("cpu"))
    split = load_split(args.eval_dir, ".", model.labels)
    if not split.paths:
        raise FileNotFoundError(f"no images in {args.eval_dir}/<class>/ for classes {', '.join(model.labels)}")
    rows = [model.predict_proba(serving_tensor([path], model.preprocessing))[0] for path in split.paths]
    probabilities, targets = torch.stack(rows), torch.tensor(split.targets)
    threshold = model.manifest.unknown_threshold or 0.0
    result = {"version": model.version, "photos": len(split.paths), **topk_errors(probabilities, targets),
              "flagged_unknown": int((probabilities.max(1).values < threshold).sum()),
              "misclassified": misclassified(split.paths, probabilities, targets, model.labels, args.eval_dir)}
    print(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None, defaults: Defaults = Defaults()) -> int:
    """The command line; the exit status is `training.cli.run_cli`'s (0, or 2 with the error on stderr)."""
    return run_cli(build_parser(defaults), lambda args: evaluate_dir(args) if args.eval_dir else run(args, defaults),
                   argv)


if __name__ == "__main__":
    sys.exit(main())
