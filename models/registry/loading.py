"""Turning a registered version into a ready-to-run network, verified and without unpickling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from models.networks import UnknownArchitectureError, build_network
from models.registry.errors import InvalidManifestError
from models.registry.store import ModelRegistry


@dataclass(frozen=True)
class LoadedModel:
    """One complete, immutable version: its manifest and its network in eval mode on `device`."""

    task: str
    version: str
    manifest: dict[str, Any]
    network: nn.Module
    device: torch.device
    labels: list[str] = field(default_factory=list)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.manifest["preprocessing"]

    @torch.inference_mode()
    def predict_proba(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N x classes, on CPU) for a preprocessed NCHW batch."""
        logits = self.network(batch.to(self.device, non_blocking=True))
        return torch.softmax(logits.float(), dim=1).cpu()


def load_model(registry: ModelRegistry, task: str, ref: str, device: torch.device) -> LoadedModel:
    """Verify the sha256 of `task`/`ref`, rebuild its architecture and load its safetensors weights.

    Raises `ChecksumMismatchError`, `InvalidManifestError` (unknown architecture, weights that
    do not fit it) or the registry's lookup errors.
    """
    manifest = registry.verify_version(task, ref)
    version = manifest["version"]
    arch = manifest["architecture"]
    try:
        network = build_network(arch["name"], **arch.get("args", {}))
    except UnknownArchitectureError as exc:
        raise InvalidManifestError(f"{task}/{version}: {exc}") from exc
    except TypeError as exc:
        raise InvalidManifestError(f"{task}/{version}: bad constructor args {arch.get('args')}: {exc}") from exc
    weights_path = registry.version_dir(task, version) / manifest["weights"]["file"]
    try:
        state = load_file(str(weights_path))
        network.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise InvalidManifestError(f"{task}/{version}: weights do not fit {arch['name']}: {exc}") from exc
    network.to(device).eval()
    return LoadedModel(
        task=task,
        version=version,
        manifest=manifest,
        network=network,
        device=device,
        labels=list(manifest["labels"]),
    )
