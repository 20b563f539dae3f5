"""Train an electronic-component classifier by transfer learning: `python -m training.components [--promote]`.

Default recipe `finetune` (linear probe, then fine-tune): EfficientNet-Lite0 (ImageNet weights from its
pip package); (1) features of each training photo and of `--views` augmented views (random resized crop,
flips, rotation, colour jitter) are cached once and a new linear head is trained on them with AdamW,
label smoothing and early stopping on the validation loss; (2) starting from that head, the head and the
last `--unfreeze` blocks are fine-tuned on freshly augmented photos every epoch (AdamW, cosine schedule,
label smoothing, early stopping). `--recipe cached-head` stops after (1). `--recipe report` is the student
report's recipe (frozen backbone, new last layer, Adam lr 1e-3, cross-entropy, 30 epochs, no augmentation).
`--eval-dir DIR --version V` scores a registered version on any labelled folder instead.
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

from models.networks import build_network
from models.registry import DEFAULT_ALIAS, DEFAULT_ROOT, ModelRegistry
from models.runtime import load_model
from training.artifacts import training_record, write_run_artifacts
from training.cli import run_cli, run_dir
from training.components_data import (DEFAULT_DATA_DIR, augmentation, class_names, extract, feature_extractor,
                                      file_hashes, last_linear, load_split)
from training.components_finetune import fine_tune, tail_parameters, load_working_copies, serving_tensor
from training.engine import (OPTIMIZERS, EarlyStopping, Schedule, batch_count, build_optimizer, fit,
                             tensor_batches)
from training.imagenet_sources import pretrained
from training.metrics import classification_report, confusion_matrix, format_report
from training.runtime import start_run

log = logging.getLogger("training.components")
TASK = "components"
# How the service offers it: the best three of the ten classes by default; small batches, two at a time.
SERVING = {"default_top_k": 3, "max_top_k": 10, "max_batch_size": 4, "concurrency": 2}
# Defaults of every knob left unset on the command line. Stage 1 trains the head on cached features
# (views, optimizer, lr, weight_decay, label_smoothing, epochs, patience); stage 2 (unfreeze > 0)
# fine-tunes the head and the last `unfreeze` blocks on fresh augmentation.
_HEAD = dict(views=10, optimizer="adamw", lr=3e-3, weight_decay=1e-3, label_smoothing=0.1, epochs=300, patience=40)
_NO_FINETUNE = dict(unfreeze=0, finetune_epochs=0, finetune_lr=0.0, finetune_weight_decay=0.0, finetune_patience=0)
RECIPES: dict[str, dict[str, Any]] = {
    "finetune": {**_HEAD, "unfreeze": 2, "finetune_epochs": 30, "finetune_lr": 3e-4, "finetune_weight_decay": 1e-2,
                 "finetune_patience": 8},
    "cached-head": {**_HEAD, **_NO_FINETUNE},
    "report": dict(views=0, optimizer="adam", lr=1e-3, weight_decay=0.0, label_smoothing=0.0, epochs=30, patience=0,
                   **_NO_FINETUNE),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.components", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="DIR/{train,validation}/<class>/*.jpg")
    p.add_argument("--backbone", default="efficientnet_lite0",
                   help="efficientnet_lite0|1|2 (offline) or a torchvision classifier (alexnet as in the report)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="finetune")
    p.add_argument("--views", type=int, default=None, help="augmented views per training photo (recipe default)")
    p.add_argument("--epochs", type=int, default=None, help="head epochs on cached features")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="head optimizer")
    p.add_argument("--lr", type=float, default=None, help="head learning rate")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--label-smoothing", type=float, default=None)
    p.add_argument("--patience", type=int, default=None, help="head early stopping (0: off)")
    p.add_argument("--unfreeze", type=int, default=None,
                   help="fine-tune the head and this many blocks before it on fresh augmentation (0: no stage 2)")
    p.add_argument("--finetune-epochs", type=int, default=None)
    p.add_argument("--finetune-lr", type=float, default=None)
    p.add_argument("--finetune-weight-decay", type=float, default=None)
    p.add_argument("--finetune-patience", type=int, default=None, help="fine-tuning early stopping (0: off)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--unknown-quantile", type=float, default=0.05,
                   help="threshold = this quantile of the confidence of correctly classified validation photos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    p.add_argument("--limit", type=int, default=0, help="at most N photos per class and split (smoke tests)")
    p.add_argument("--out-dir", type=Path, default=None, help="run folder (default runs/components/<time>)")
    p.add_argument("--store", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--promote", action="store_true")
    p.add_argument("--no-register", dest="register", action="store_false")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--eval-dir", type=Path, default=None, help="evaluate --version on DIR/<class>/*.jpg and exit")
    p.add_argument("--version", default=DEFAULT_ALIAS, help="version or alias for --eval-dir")
    return p


def resolve_recipe(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every knob left unset from the recipe; fail early on values that cannot work."""
    for key, value in RECIPES[args.recipe].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.views < 0 or args.epochs < 1 or args.unfreeze < 0 or args.batch_size < 1:
        raise ValueError("--views and --unfreeze must be >= 0, --epochs and --batch-size >= 1")
    if args.unfreeze and args.finetune_epochs < 1:
        raise ValueError("--unfreeze needs --finetune-epochs >= 1")
    return args


def train_head(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
               num_classes: int, args: argparse.Namespace, generator: torch.Generator) -> tuple[nn.Linear, list[dict]]:
    """A linear head on cached features (views x N x D for training), trained by `training.engine.fit`: the
    views in a fresh order each epoch, no LR schedule, validation as the dev set in one batch. With
    `args.patience` the best validation-loss weights are kept, else the last epoch's. Returns the head
    (eval mode) and its history rows (stage "head")."""
    head = nn.Linear(train_x.shape[-1], num_classes)
    optimizer = build_optimizer(args.optimizer, head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    xs, ys = train_x.reshape(-1, train_x.shape[-1]), train_y.repeat(train_x.shape[0])
    result = fit(head, train_batches=lambda: tensor_batches(xs, ys, args.batch_size, generator=generator),
                 dev_batches=lambda: [(val_x, val_y)], steps_per_epoch=batch_count(len(ys), args.batch_size),
                 optimizer=optimizer, schedule=Schedule(None, per_batch=False), epochs=args.epochs,
                 device=torch.device("cpu"),
                 early_stopping=EarlyStopping(args.patience, min_delta=1e-4, restore_best=args.patience > 0),
                 train_loss=nn.CrossEntropyLoss(label_smoothing=args.label_smoothing), progress=args.progress,
                 epoch_log_level=logging.DEBUG)
    return head.eval(), staged(result.history, "head")


def staged(history: list[dict[str, Any]], stage: str, first_epoch: int = 1) -> list[dict[str, Any]]:
    """`history` rows marked with their `stage`, renumbered to run on from `first_epoch`."""
    return [{"stage": stage, **row, "epoch": first_epoch + i} for i, row in enumerate(history)]


def topk_errors(probabilities: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    top3 = probabilities.topk(min(3, probabilities.shape[1]), dim=1).indices
    return {"top1_error": round(float((top3[:, 0] != targets).float().mean()), 4),
            "top3_error": round(float(1 - (top3 == targets[:, None]).any(1).float().mean()), 4)}


def misclassified(paths: list[Path], probabilities: torch.Tensor, targets: torch.Tensor, labels: list[str],
                  root: Path) -> list[dict[str, Any]]:
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


def assemble(source: Any, head_name: str, head: nn.Linear, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """The full classifier: the pretrained backbone with `head` in place of its ImageNet head."""
    architecture = json.loads(json.dumps(source.architecture))
    if architecture["name"] == "torchvision":
        architecture["args"]["kwargs"] = {**architecture["args"].get("kwargs", {}), "num_classes": num_classes}
    else:
        architecture["args"]["num_classes"] = num_classes
    network = build_network(architecture["name"], **architecture["args"])
    state = {k: v for k, v in source.network.state_dict().items() if not k.startswith(f"{head_name}.")}
    state.update({f"{head_name}.{k}": v for k, v in head.state_dict().items()})
    network.load_state_dict(state, strict=True)
    return network.eval(), architecture


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Extract features, train the head (then fine-tune), evaluate on validation, write artifacts, register."""
    resolve_recipe(args)
    start = start_run(args.seed, args.threads)
    generator = start.generator
    labels = class_names(args.data_dir)
    train = load_split(args.data_dir, "train", labels, args.limit)
    validation = load_split(args.data_dir, "validation", labels, args.limit)
    if not train.paths or not validation.paths:
        raise FileNotFoundError(f"{args.data_dir} needs photos in train/<class>/ and validation/<class>/")
    source = pretrained(args.backbone)
    head_name, _ = last_linear(source.network)
    tail_parameters(source.network, head_name, args.unfreeze)  # a bad --unfreeze fails before any work
    extractor = feature_extractor(source.network, head_name)
    preset = source.preprocessing
    train_x = extract(extractor, train.paths, preset, views=args.views, transform=augmentation(preset),
                      progress=args.progress, desc="train")
    val_x = extract(extractor, validation.paths, preset, progress=args.progress, desc="validation")[0]
    train_y, val_y = torch.tensor(train.targets), torch.tensor(validation.targets)
    extract_seconds = start.elapsed()
    head, history = train_head(train_x, train_y, val_x, val_y, len(labels), args, generator)
    network, architecture = assemble(source, head_name, head, len(labels))
    val_images = serving_tensor(validation.paths, preset)
    finetuned: list[str] = []
    if args.unfreeze:
        result, finetuned = fine_tune(network, head_name, train_images=load_working_copies(train.paths, preset),
                                      train_targets=train.targets, val_x=val_images, val_y=val_y, preset=preset,
                                      transform=augmentation(preset), args=args, generator=generator)
        history += staged(result.history, "finetune", len(history) + 1)
    with torch.inference_mode():
        probabilities = torch.softmax(network.eval()(val_images), 1)
    matrix = confusion_matrix(val_y, probabilities.argmax(1), len(labels))
    report = classification_report(matrix, labels)
    errors = {**topk_errors(probabilities, val_y),
              "loss": round(float(nn.functional.nll_loss(probabilities.clamp_min(1e-12).log(), val_y)), 4)}
    missed = misclassified(validation.paths, probabilities, val_y, labels, args.data_dir)
    threshold = unknown_threshold(probabilities, val_y, args.unknown_quantile)
    print(format_report(report))
    print(f"validation top-1 error {errors['top1_error']:.1%}, top-3 error {errors['top3_error']:.1%}; "
          f"unknown below confidence {threshold}")
    for row in missed:
        print(f"  missed {row['photo']}: {row['top3']}")
    wall = start.elapsed()
    artifacts = write_run_artifacts(run_dir(args.out_dir, "components"), history, matrix=matrix, labels=labels,
                                    title=f"{args.backbone} {args.recipe} seed {args.seed} (dev = validation)",
                                    matrix_title="validation")
    summary = {**errors, "validation_photos": len(validation.paths), "epochs_run": len(history),
               "extract_seconds": round(extract_seconds, 1), "wall_seconds": round(wall, 1), "version": None,
               "unknown_threshold": threshold}
    if args.register:
        metrics = {"validation_top1_error": errors["top1_error"], "validation_top3_error": errors["top3_error"],
                   "validation_loss": errors["loss"], "validation_accuracy": report["accuracy"], "report": report,
                   "confusion_matrix": matrix.tolist(), "misclassified": missed, "unknown_threshold": threshold,
                   "unknown_quantile": args.unknown_quantile}
        manifest = {
            "kind": "image-classification", "architecture": architecture, "labels": labels, "preprocessing": preset,
            "inference": {"fold_batchnorm": True, "channels_last": True}, "serving": SERVING,
            "unknown_threshold": threshold, "metrics": metrics,
            "training": training_record(args, device="cpu", wall_seconds=wall, recipe=args.recipe,
                                        epochs_run=len(history), finetuned_parameters=finetuned),
            "lineage": {"dataset": "components", "files": file_hashes(train, validation, root=args.data_dir),
                        "backbone": {"name": args.backbone, **source.source}, "code_commit": start.commit},
        }
        registry = ModelRegistry(args.store)
        summary["version"] = registry.register(TASK, network, manifest, artifacts=artifacts,
                                               label=f"{args.backbone}-s{args.seed}", base_weights=source.base_weights)
        if args.promote:
            registry.promote(TASK, summary["version"])
    print(json.dumps(summary))
    return summary


def evaluate_dir(args: argparse.Namespace) -> dict[str, Any]:
    """Top-1/top-3 error of a registered version on DIR/<class>/*.jpg (classes = the model's labels), each
    photo scored alone as the service would."""
    model = load_model(ModelRegistry(args.store), TASK, args.version, torch.device("cpu"))
    split = load_split(args.eval_dir, ".", model.labels)
    if not split.paths:
        raise FileNotFoundError(f"no photos in {args.eval_dir}/<class>/ for classes {', '.join(model.labels)}")
    rows = [model.predict_proba(serving_tensor([path], model.preprocessing))[0] for path in split.paths]
    probabilities, targets = torch.stack(rows), torch.tensor(split.targets)
    errors = topk_errors(probabilities, targets)
    threshold = model.manifest.unknown_threshold or 0.0
    result = {"version": model.version, "photos": len(split.paths), **errors,
              "flagged_unknown": int((probabilities.max(1).values < threshold).sum()),
              "misclassified": misclassified(split.paths, probabilities, targets, model.labels, args.eval_dir)}
    print(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    """The command line; the exit status is `training.cli.run_cli`'s (0, or 2 with the error on stderr)."""
    return run_cli(build_parser(), lambda args: evaluate_dir(args) if args.eval_dir else run(args), argv)


if __name__ == "__main__":
    sys.exit(main())
