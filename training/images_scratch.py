"""The scratch recipe of `training.images`: a small ResNet trained from random weights on small images.

Every image is decoded once, by the very function the service runs on an upload
(`models.preprocessing.image_to_array` with the version's preset: shorter side to `image_size`, centre
crop, bilinear), and kept in memory as uint8; a batch is those pixels scaled and normalised exactly as
`models.preprocessing.to_tensor` does for the service, so validation and test images are scored on the
tensors the service would make. Training batches are then augmented on tensors (reflection-padded random
crop, horizontal flip: `training.augment.random_crop_flip`). Mean and std of the preset are the training
images' own per-channel statistics. Optimisation is `training.engine.fit`: SGD with Nesterov momentum (or
Adam/AdamW), one-cycle LR by default, label smoothing; with `patience` > 0, early stopping on the
validation loss keeps the best weights, else the last epoch's are kept.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.image_presets import rgb_preset
from models.imaging import TRUSTED_MAX_PIXELS
from models.networks import build_network, count_parameters
from models.preprocessing import image_to_array, to_tensor
from models.tta import class_probabilities
from training.augment import random_crop_flip
from training.engine import (EarlyStopping, batch_count, build_optimizer, build_schedule, fit,
                             load_checkpoint)
from training.image_folder import FolderSplits, Split
from training.images_metrics import Trained
from training.runtime import RunStart

log = logging.getLogger("training.images")
# The from-scratch networks `--arch` offers (names in models.networks.ARCHITECTURES) -> their constructor
# arguments from the knobs (besides num_classes).
SCRATCH_ARCHITECTURES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "small-resnet": lambda a: {"width": a.width, "depth": a.depth},
    "airbench": lambda a: {"widths": [a.width, 4 * a.width, 4 * a.width]},
    "cifar-lenet": lambda a: {"width": a.width, "batchnorm": a.batchnorm},
    "keras-cnn": lambda a: {"batchnorm": a.batchnorm},
    "alexnet-small": lambda a: {"batchnorm": a.batchnorm},
}
FIXED_SIZE = {"cifar-lenet": 32, "keras-cnn": 32, "alexnet-small": 32}  # their FC layers fix the input size
# The knobs of this recipe (each a command-line option; `training.images.RECIPES` sets their defaults).
KNOBS = ("arch", "width", "depth", "batchnorm", "image_size", "optimizer", "lr", "momentum", "weight_decay",
         "label_smoothing", "epochs", "patience", "batch_size", "scheduler", "crop_padding", "flip", "tta", "precision")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # bf16: autocast forward passes (fast on CPUs with AMX)
EVAL_BATCH = 256
WHITENING_IMAGES = 5000  # training images whose 2x2 patches set a whitening layer (airbench)


def check_args(args: argparse.Namespace) -> None:
    """Fail early on knob values that cannot work; an unset `crop_padding` becomes image size / 8."""
    if args.crop_padding is None:
        args.crop_padding = args.image_size // 8
    if args.arch not in SCRATCH_ARCHITECTURES:
        raise ValueError(f"--arch {args.arch!r}: valid: {', '.join(SCRATCH_ARCHITECTURES)}")
    if FIXED_SIZE.get(args.arch, args.image_size) != args.image_size:
        raise ValueError(f"--arch {args.arch} takes --image-size {FIXED_SIZE[args.arch]} only")
    if min(args.width, args.depth, args.epochs, args.batch_size) < 1 or args.image_size < 8:
        raise ValueError("--width, --depth, --epochs and --batch-size must be >= 1 and --image-size >= 8")
    if not 0 <= args.crop_padding < args.image_size:
        raise ValueError(f"--crop-padding must be in [0, {args.image_size}) (reflection padding)")


def decode_images(paths: list[Path], preset: dict, *, progress: bool, desc: str) -> np.ndarray:
    """N x H x W x 3 uint8: each image as the service's `image_to_array` makes it under `preset` (exact: that
    function's output is uint8 pixels divided by 255)."""
    out = np.empty((len(paths), *preset["size"], 3), dtype=np.uint8)
    for i, path in enumerate(tqdm(paths, desc=f"decode {desc}", disable=not progress, leave=False)):
        array = image_to_array(path.read_bytes(), preset, max_pixels=TRUSTED_MAX_PIXELS)
        out[i] = np.rint(array * 255.0)
    return out


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (in [0, 1] units, 4 decimals) of N x H x W x 3 uint8 images."""
    pixels = images.reshape(-1, 3).astype(np.float64) / 255.0
    return [round(float(v), 4) for v in pixels.mean(0)], [round(max(float(v), 1e-3), 4) for v in pixels.std(0)]


def inputs(images: np.ndarray, preset: dict) -> torch.Tensor:
    """The normalised NCHW batch of uint8 images: the service's arithmetic (x * (1/255), then `to_tensor`)."""
    return to_tensor(images.astype(np.float32) * (1.0 / 255.0), preset)


def batches(images: np.ndarray, targets: torch.Tensor, preset: dict, batch_size: int, *,
            generator: torch.Generator | None = None, padding: int = 0,
            flip: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) in order; with `generator`, in a fresh random order and augmented."""
    order = torch.randperm(len(targets), generator=generator) if generator is not None else torch.arange(len(targets))
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        x = inputs(images[index.numpy()], preset)
        if generator is not None:
            x = random_crop_flip(x, padding, generator, flip=flip)
        yield x.contiguous(memory_format=torch.channels_last), targets[index]


@torch.no_grad()
def predict_proba(model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
                  tta: str | None) -> torch.Tensor:
    """Class probabilities (CPU) of every batch, under the TTA the service will apply (`models.tta`)."""
    model.eval()
    return torch.cat([class_probabilities(model, x.to(device), tta).cpu() for x, _ in batches])


def train_scratch(args: argparse.Namespace, data: FolderSplits, start: RunStart, device: torch.device,
                  out_dir: Path) -> Trained:
    """Decode, train on `device` (checkpoint `out_dir/checkpoint.pt` after every epoch; `args.resume` continues
    one), and score validation and test; the network comes back on the CPU."""
    size = args.image_size
    draft = rgb_preset(size, size, [0.5] * 3, [0.5] * 3, interpolation="bilinear")  # mean/std unused to decode
    splits: dict[str, Split] = {"train": data.train, "validation": data.validation}
    if data.test is not None:
        splits["test"] = data.test
    cache = {name: decode_images(split.paths, draft, progress=args.progress, desc=name)
             for name, split in splits.items()}
    targets = {name: torch.tensor(split.targets) for name, split in splits.items()}
    mean, std = channel_stats(cache["train"])
    preset = rgb_preset(size, size, mean, std, interpolation="bilinear", tta=args.tta)
    architecture = {"name": args.arch, "args": {"num_classes": len(data.labels),
                                                **SCRATCH_ARCHITECTURES[args.arch](args)}}
    model = build_network(architecture["name"], **architecture["args"])
    if hasattr(model, "init_whitening"):
        model.init_whitening(inputs(cache["train"][:WHITENING_IMAGES], preset))
    model = model.to(device, memory_format=torch.channels_last)  # faster convolutions on CPU and GPU
    optimizer = build_optimizer(args.optimizer, model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                momentum=args.momentum, nesterov=True)
    steps = batch_count(len(targets["train"]), args.batch_size)
    schedule = build_schedule(args.scheduler, optimizer, epochs=args.epochs, steps_per_epoch=steps, max_lr=args.lr)
    log.info("%s width %d depth %d: %d parameters; %s images; device %s", args.arch, args.width, args.depth,
             count_parameters(model), data.counts(), device)

    def dev_batches(name: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return batches(cache[name], targets[name], preset, EVAL_BATCH)

    out_dir.mkdir(parents=True, exist_ok=True)
    result = fit(model, train_batches=lambda: batches(cache["train"], targets["train"], preset, args.batch_size,
                                                      generator=start.generator, padding=args.crop_padding,
                                                      flip=args.flip),
                 dev_batches=lambda: dev_batches("validation"), steps_per_epoch=steps, optimizer=optimizer,
                 schedule=schedule, epochs=args.epochs, device=device,
                 early_stopping=EarlyStopping(args.patience, min_delta=1e-4, restore_best=args.patience > 0),
                 train_loss=nn.CrossEntropyLoss(label_smoothing=args.label_smoothing), progress=args.progress,
                 checkpoint=out_dir / "checkpoint.pt", generator=start.generator,
                 resume_from=load_checkpoint(args.resume) if args.resume else None,
                 autocast=PRECISIONS[args.precision])
    probabilities = {name: predict_proba(model, dev_batches(name), device, args.tta)
                     for name in splits if name != "train"}
    model = model.to(memory_format=torch.contiguous_format)
    return Trained(network=model.cpu().eval(), architecture=architecture, preprocessing=preset,
                   inference={"fold_batchnorm": True}, history=result.history, probabilities=probabilities,
                   label=f"{args.arch}-s{args.seed}",
                   curve_title=f"{args.arch} w{args.width} {size}px seed {args.seed}",
                   training={"normalization": "training-set mean/std"}, lineage={}, summary={}, result=result)
