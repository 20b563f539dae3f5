"""Turning a registered version into its network: verified, rebuilt by name, weights without unpickling.

How the network is then run (PyTorch rewrites, ONNX Runtime) is `models.runtime`'s concern.
"""

from __future__ import annotations

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from models.networks import UnknownArchitectureError, build_network
from models.registry.base_weights import load_base_state
from models.registry.errors import InvalidManifestError
from models.registry.schema import Manifest
from models.registry.store import ModelRegistry


def load_network(registry: ModelRegistry, task: str, ref: str, device: torch.device) -> tuple[Manifest, nn.Module]:
    """Verify the sha256 of `task`/`ref`, rebuild its architecture and load its safetensors weights (over
    the package-shipped base weights when the manifest names them); the network is in eval mode on `device`.

    Raises `ChecksumMismatchError`, `InvalidManifestError` (bad manifest, unknown architecture, weights
    that do not fit it) or the registry's lookup errors.
    """
    manifest = registry.verify_version(task, ref)
    name = f"{task}/{manifest.version}"
    arch = manifest.architecture
    try:
        network = build_network(arch.name, **arch.args)
    except UnknownArchitectureError as exc:
        raise InvalidManifestError(f"{name}: architecture.name: {exc}") from exc
    except TypeError as exc:
        raise InvalidManifestError(f"{name}: architecture.args {arch.args} do not fit {arch.name}: {exc}") from exc
    weights_path = registry.version_dir(task, manifest.version) / manifest.weights.file
    try:
        state = load_base_state(manifest.base_weights.model_dump()) if manifest.base_weights else {}
        state.update(load_file(str(weights_path)))
        network.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise InvalidManifestError(f"{name}: weights do not fit {arch.name}: {exc}") from exc
    return manifest, network.to(device).eval()
