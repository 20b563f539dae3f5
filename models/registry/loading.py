"""Turning a registered version into a ready-to-run network, verified and without unpickling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from models.networks import UnknownArchitectureError, build_network
from models.onnx_backend import build_runner
from models.optimize import inference_module
from models.preprocessing import example_input
from models.registry.base_weights import load_base_state
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
    # What serves requests (models.optimize's rewrites or an ONNX Runtime session); None means `network`.
    runner: Callable[[torch.Tensor], torch.Tensor] | None = None
    backend: str = "torch"

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.manifest["preprocessing"]

    @torch.inference_mode()
    def predict_proba(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N x classes, on CPU) for a preprocessed NCHW batch."""
        runner = self.network if self.runner is None else self.runner
        logits = runner(batch.to(self.device, non_blocking=True))
        return torch.softmax(logits.float(), dim=1).cpu()


def load_model(registry: ModelRegistry, task: str, ref: str, device: torch.device, *, backend: str = "torch",
               threads: int = 1) -> LoadedModel:
    """Verify the sha256 of `task`/`ref`, rebuild its architecture and load its safetensors weights
    (over the package-shipped base weights when the manifest names them; see `base_weights`), then
    prepare what runs requests: PyTorch (`backend="torch"`) or ONNX Runtime with `threads` threads.

    Raises `ChecksumMismatchError`, `InvalidManifestError` (unknown architecture, weights that
    do not fit it), the registry's lookup errors, or `BackendError` (the backend cannot run it).
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
        state = load_base_state(manifest["base_weights"]) if "base_weights" in manifest else {}
        state.update(load_file(str(weights_path)))
        network.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise InvalidManifestError(f"{task}/{version}: weights do not fit {arch['name']}: {exc}") from exc
    network.to(device).eval()
    try:
        runner = inference_module(network, manifest.get("inference"))
    except ValueError as exc:
        raise InvalidManifestError(f"{task}/{version}: {exc}") from exc
    if backend != "torch":
        runner = build_runner(backend, network, example_input(manifest["preprocessing"]), device, threads)
    return LoadedModel(
        task=task,
        version=version,
        manifest=manifest,
        network=network,
        device=device,
        labels=list(manifest["labels"]),
        runner=runner if runner is not network else None,
        backend=backend,
    )
