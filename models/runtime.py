"""What serves a loaded version: its verified network and the module or session that runs requests.

`load_model` = `models.registry.load_network` (verified weights) + the inference rewrites its manifest
asks for (`models.optimize`) + the chosen backend (`models.onnx_backend`). Shared by the service and by
trainers and benchmarks that score registered versions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from models.onnx_backend import build_runner
from models.optimize import inference_module
from models.preprocessing import example_input
from models.registry import InvalidManifestError, Manifest, ModelRegistry, load_network
from models.tta import class_probabilities, tta_mode


@dataclass(frozen=True)
class LoadedModel:
    """One complete, immutable version: its manifest and its network in eval mode on `device`."""

    task: str
    version: str
    manifest: Manifest
    network: nn.Module
    device: torch.device
    # What serves requests (models.optimize's rewrites or an ONNX Runtime session); None means `network`.
    runner: Callable[[torch.Tensor], torch.Tensor] | None = None
    backend: str = "torch"

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def preprocessing(self) -> dict:
        return self.manifest.preprocessing

    @torch.inference_mode()
    def predict_proba(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N x classes, on CPU) for a preprocessed NCHW batch, averaged over the views
        of the preset's test-time augmentation when it names one (`models.tta`)."""
        runner = self.network if self.runner is None else self.runner
        batch = batch.to(self.device, non_blocking=True)
        return class_probabilities(runner, batch, tta_mode(self.preprocessing)).cpu()


def load_model(registry: ModelRegistry, task: str, ref: str, device: torch.device, *, backend: str = "torch",
               threads: int = 1) -> LoadedModel:
    """The verified version `task`/`ref`, ready to serve with `backend` ("torch", or "onnxruntime" with
    `threads` threads). Raises what `load_network` raises, or `BackendError` (the backend cannot run it)."""
    manifest, network = load_network(registry, task, ref, device)
    try:
        runner = inference_module(network, manifest.inference.model_dump() if manifest.inference else None)
    except ValueError as exc:
        raise InvalidManifestError(f"{task}/{manifest.version}: inference: {exc}") from exc
    if backend != "torch":
        runner = build_runner(backend, network, example_input(manifest.preprocessing), device, threads)
    return LoadedModel(task=task, version=manifest.version, manifest=manifest, network=network, device=device,
                       runner=runner if runner is not network else None, backend=backend)
