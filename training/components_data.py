"""Photos for transfer learning: augmented views and cached backbone features (the image-folder tree itself is
`training.image_folder`, whose names are re-exported here).

A frozen backbone makes the same features for the same pixels, so each photo (and each of its
augmented views) goes through the backbone once; the classifier head then trains on the cached
vectors in seconds.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2
from tqdm import tqdm

from models.imaging import TRUSTED_MAX_PIXELS, load_oriented, open_image
from models.optimize import inference_module
from models.paths import data_dir
from models.preprocessing import image_to_array, to_tensor
from training.image_folder import IMAGE_SUFFIXES, Split, class_names, file_hashes, load_split

__all__ = ["DEFAULT_DATA_DIR", "IMAGE_SUFFIXES", "Split", "augmentation", "augmented_array", "class_names", "extract",
           "feature_extractor", "file_hashes", "last_linear", "load_split", "working_copy"]

DEFAULT_DATA_DIR = data_dir("components")


def augmentation(preset: dict[str, Any], *, vertical_flip: bool = True) -> v2.Compose:
    """Random resized crop, flips (vertical ones too with `vertical_flip`: components lie in any orientation on
    the bench, landscapes do not), rotation and colour jitter, at the preset's input size."""
    size = preset["size"][0]
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        *([v2.RandomVerticalFlip()] if vertical_flip else []),
        v2.RandomRotation(20),
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03),
    ])


def working_copy(path: Path, preset: dict[str, Any]) -> Image.Image:
    """The photo at `path` decoded at about twice the model's resize: augmented crops come from a modest size."""
    image = load_oriented(open_image(path.read_bytes()), mode="RGB", draft_size=(preset["resize"],) * 2).copy()
    image.thumbnail((preset["resize"] * 2, preset["resize"] * 2), Image.BILINEAR)
    return image


def augmented_array(image: Image.Image, transform: v2.Compose) -> np.ndarray:
    """One random view of a working copy, as the H x W x 3 [0, 1] array the preset's `to_tensor` takes."""
    return np.asarray(transform(image), dtype=np.float32) * (1.0 / 255.0)


def feature_extractor(network: nn.Module, head_name: str) -> nn.Module:
    """A copy of `network` whose head (`head_name`, a Linear) returns its input: the pooled features."""
    extractor = copy.deepcopy(network).eval()
    parent_name, _, child = head_name.rpartition(".")
    setattr(extractor.get_submodule(parent_name) if parent_name else extractor, child, nn.Identity())
    return inference_module(extractor, {"fold_batchnorm": True, "channels_last": True})


def last_linear(network: nn.Module) -> tuple[str, nn.Linear]:
    """Name and module of the network's final Linear layer (its classifier head)."""
    linears = [(name, m) for name, m in network.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(network).__name__} has no Linear layer to replace")
    return linears[-1]


@torch.inference_mode()
def extract(extractor: nn.Module, paths: list[Path], preset: dict[str, Any], *, views: int = 0,
            transform: v2.Compose | None = None, batch_size: int = 16, progress: bool = True,
            desc: str = "features", device: torch.device | None = None) -> torch.Tensor:
    """Features of each photo: the plain (serving) view first, then `views` augmented ones; the extractor
    runs on `device` (default: where it is), the features come back on the CPU.

    Returns (1 + views) x N x D.
    """
    out = []
    for view in range(1 + views):
        rows = []
        for start in tqdm(range(0, len(paths), batch_size), desc=f"{desc} view {view}", disable=not progress,
                          leave=False):
            chunk = paths[start : start + batch_size]
            if view == 0:
                arrays = [image_to_array(p.read_bytes(), preset, max_pixels=TRUSTED_MAX_PIXELS) for p in chunk]
            else:
                arrays = [augmented_array(working_copy(p, preset), transform) for p in chunk]
            batch = to_tensor(arrays, preset)
            rows.append(extractor(batch if device is None else batch.to(device)).float().cpu())
        out.append(torch.cat(rows))
    return torch.stack(out)
