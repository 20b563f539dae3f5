"""Fine-tuning the last blocks of a pretrained backbone on a few photos, with fresh augmentation each epoch.

The second stage of the default components recipe (linear probe, then fine-tune: the head trained on
cached features is the starting point, so the unfrozen blocks are not pulled around by a random head).
Only the last `blocks` parameter groups and the head learn; batch-norm statistics stay as pretrained
(80 photos in batches of 16 would make noisy statistics), so the network runs in eval mode throughout.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from models.imaging import TRUSTED_MAX_PIXELS
from models.preprocessing import image_to_array, to_tensor
from training.components_data import augmented_array, working_copy
from training.engine import (EarlyStopping, FitResult, batch_count, build_optimizer, build_schedule, fit,
                             tensor_batches)

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def parameter_groups(network: nn.Module) -> list[list[str]]:
    """The network's parameters in definition order, grouped by unit: an indexed child of a container
    (`_blocks.15`, `layer4.1`, `features.12`) or a top-level layer (`_conv_head`); a unit holding only
    normalisation parameters joins the unit before it (a head conv and its batch norm are one unit)."""
    norm_modules = {name for name, m in network.named_modules() if isinstance(m, NORM_TYPES)}
    groups: list[tuple[str, list[str], bool]] = []
    for name, _ in network.named_parameters():
        parts = name.split(".")
        unit = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
        only_norm = name.rpartition(".")[0] in norm_modules
        if groups and groups[-1][0] == unit:
            groups[-1][1].append(name)
            groups[-1] = (unit, groups[-1][1], groups[-1][2] and only_norm)
        else:
            groups.append((unit, [name], only_norm))
    merged: list[list[str]] = []
    for _, names, only_norm in groups:
        if only_norm and merged:
            merged[-1].extend(names)
        else:
            merged.append(list(names))
    return merged


def tail_parameters(network: nn.Module, head_name: str, blocks: int) -> set[str]:
    """Names of the head's parameters and those of the last `blocks` units before it."""
    groups = [g for g in parameter_groups(network) if not g[0].startswith(f"{head_name}.")]
    if not 0 <= blocks <= len(groups):
        raise ValueError(f"--unfreeze {blocks}: the backbone has {len(groups)} units before its head "
                         f"(valid: 0 to {len(groups)})")
    tail = {n for g in groups[len(groups) - blocks:] for n in g} if blocks else set()
    return tail | {n for n, _ in network.named_parameters() if n.startswith(f"{head_name}.")}


def unfreeze_tail(network: nn.Module, head_name: str, blocks: int) -> list[str]:
    """Freeze everything but the head and the last `blocks` units before it; returns the trainable names."""
    trainable = tail_parameters(network, head_name, blocks)
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(name in trainable)
    return sorted(trainable)


class FrozenStatistics(nn.Module):
    """Wraps a network so `train()` never switches its normalisation layers (or dropout) to training mode."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def train(self, mode: bool = True) -> "FrozenStatistics":
        super().train(False)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def load_working_copies(paths: list[Path], preset: dict[str, Any]) -> list[Image.Image]:
    """Each photo decoded once (`working_copy`); every epoch's augmented views are cut from these."""
    return [working_copy(path, preset) for path in paths]


def augmented_batches(images: list[Image.Image], targets: list[int], preset: dict[str, Any], transform: v2.Compose,
                      batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of freshly augmented views in a shuffled order (the transforms draw from torch's global RNG,
    which `seed_everything` seeded)."""
    order = torch.randperm(len(images), generator=generator).tolist()
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        arrays = [augmented_array(images[i], transform) for i in index]
        yield to_tensor(arrays, preset), torch.tensor([targets[i] for i in index])


def serving_tensor(paths: list[Path], preset: dict[str, Any]) -> torch.Tensor:
    """The photos exactly as the service sees them (the preset's decode, resize and crop)."""
    return to_tensor([image_to_array(p.read_bytes(), preset, max_pixels=TRUSTED_MAX_PIXELS) for p in paths], preset)


def fine_tune(network: nn.Module, head_name: str, *, train_images: list[Image.Image], train_targets: list[int],
              val_x: torch.Tensor, val_y: torch.Tensor, preset: dict[str, Any], transform: v2.Compose,
              args: argparse.Namespace, generator: torch.Generator, device: torch.device = torch.device("cpu"),
              checkpoint: Path | None = None, resume_from: dict[str, Any] | None = None) -> tuple[FitResult, list[str]]:
    """Train the head and the last `args.unfreeze` units of `network` in place, on `device` (the network ends on
    the CPU); the best validation-loss weights are kept. `checkpoint` / `resume_from` are `fit`'s. Returns the
    fit result and the names of the parameters that learned."""
    trainable = unfreeze_tail(network, head_name, args.unfreeze)
    network.to(device)
    model = FrozenStatistics(network)
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer = build_optimizer("adamw", params, lr=args.finetune_lr, weight_decay=args.finetune_weight_decay)
    steps = batch_count(len(train_images), args.batch_size)
    schedule = build_schedule("cosine", optimizer, epochs=args.finetune_epochs, steps_per_epoch=steps,
                              max_lr=args.finetune_lr)
    result = fit(model, train_batches=lambda: augmented_batches(train_images, train_targets, preset, transform,
                                                                args.batch_size, generator),
                 dev_batches=lambda: tensor_batches(val_x, val_y, args.batch_size), steps_per_epoch=steps,
                 optimizer=optimizer, schedule=schedule,
                 epochs=args.finetune_epochs, device=device,
                 early_stopping=EarlyStopping(patience=args.finetune_patience, min_delta=1e-4),
                 train_loss=nn.CrossEntropyLoss(label_smoothing=args.label_smoothing), progress=args.progress,
                 generator=generator, checkpoint=checkpoint, resume_from=resume_from)
    network.cpu()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return result, trainable
