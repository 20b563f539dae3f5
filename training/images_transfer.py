"""The transfer recipes of `training.images`: a pretrained ImageNet backbone, a linear probe on cached
features, then (with `unfreeze` > 0) fine-tuning of the head and the last blocks.

(1) Features of each training image and of `views` augmented views of it (random resized crop, flips,
rotation, colour jitter) are computed once by the frozen backbone, and a new linear head trains on them
(`train_head`: early stopping on the validation loss). (2) Starting from that head, the head and the last
`unfreeze` units are fine-tuned on freshly augmented images every epoch (`training.components_finetune`).
Validation is the dev set of both stages. The backbone's own preprocessing preset is the serving preset.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.image_presets import with_tta
from models.networks import build_network
from training.components_data import augmentation, extract, feature_extractor, last_linear
from training.components_finetune import fine_tune, load_working_copies, serving_tensor, tail_parameters
from training.engine import EarlyStopping, Schedule, batch_count, build_optimizer, fit, load_checkpoint, tensor_batches
from training.image_folder import FolderSplits
from training.images_metrics import Trained, predict_paths
from training.imagenet_sources import pretrained
from training.runtime import RunStart

# The knobs of these recipes (each a command-line option; `training.images.RECIPES` sets their defaults).
KNOBS = ("backbone", "views", "vertical_flip", "optimizer", "lr", "weight_decay", "label_smoothing", "epochs",
         "patience", "unfreeze", "finetune_epochs", "finetune_lr", "finetune_weight_decay", "finetune_patience",
         "batch_size", "tta")


def check_args(args: argparse.Namespace) -> None:
    """Fail early on knob values that cannot work."""
    if args.views < 0 or args.epochs < 1 or args.unfreeze < 0 or args.batch_size < 1:
        raise ValueError("--views and --unfreeze must be >= 0, --epochs and --batch-size >= 1")
    if args.unfreeze and args.finetune_epochs < 1:
        raise ValueError("--unfreeze needs --finetune-epochs >= 1")
    if args.resume and not args.unfreeze:
        raise ValueError("--resume continues the fine-tuning stage: this recipe has none (--unfreeze 0)")


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


def train_transfer(args: argparse.Namespace, data: FolderSplits, start: RunStart, device: torch.device,
                   out_dir: Path) -> Trained:
    """Both stages on `data` (features extracted and fine-tuning run on `device`; the head trains on the CPU);
    the fine-tuning checkpoint is `out_dir/checkpoint.pt` (`args.resume` continues one: stage 1 is redone,
    deterministically, then stage 2 resumes)."""
    generator = start.generator
    source = pretrained(args.backbone)
    head_name, _ = last_linear(source.network)
    tail_parameters(source.network, head_name, args.unfreeze)  # a bad --unfreeze fails before any work
    extractor = feature_extractor(source.network, head_name).to(device)
    preset = with_tta(source.preprocessing, args.tta)  # the views are the scoring's and the service's only
    train, validation, labels = data.train, data.validation, data.labels
    transform = augmentation(preset, vertical_flip=args.vertical_flip)
    train_x = extract(extractor, train.paths, preset, views=args.views, transform=transform, progress=args.progress,
                      desc="train", device=device)
    val_x = extract(extractor, validation.paths, preset, progress=args.progress, desc="validation", device=device)[0]
    del extractor
    train_y, val_y = torch.tensor(train.targets), torch.tensor(validation.targets)
    extract_seconds = start.elapsed()
    head, history = train_head(train_x, train_y, val_x, val_y, len(labels), args, generator)
    network, architecture = assemble(source, head_name, head, len(labels))
    finetuned: list[str] = []
    if args.unfreeze:
        out_dir.mkdir(parents=True, exist_ok=True)
        result, finetuned = fine_tune(network, head_name, train_images=load_working_copies(train.paths, preset),
                                      train_targets=train.targets, val_x=serving_tensor(validation.paths, preset),
                                      val_y=val_y, preset=preset,
                                      transform=augmentation(preset, vertical_flip=args.vertical_flip), args=args,
                                      generator=generator, device=device, checkpoint=out_dir / "checkpoint.pt",
                                      resume_from=load_checkpoint(args.resume) if args.resume else None)
        history += staged(result.history, "finetune", len(history) + 1)
    splits = {"validation": validation, "test": data.test}
    probabilities = {name: predict_paths(network, split.paths, preset) for name, split in splits.items() if split}
    return Trained(network=network.eval(), architecture=architecture, preprocessing=preset,
                   inference={"fold_batchnorm": True, "channels_last": True}, history=history,
                   probabilities=probabilities, label=f"{args.backbone}-s{args.seed}",
                   curve_title=f"{args.backbone} {args.recipe} seed {args.seed} (dev = validation)",
                   training={"epochs_run": len(history), "finetuned_parameters": finetuned},
                   lineage={"backbone": {"name": args.backbone, **source.source}},
                   summary={"extract_seconds": round(extract_seconds, 1)}, base_weights=source.base_weights)
