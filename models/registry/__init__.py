"""The model registry: store, manifest, verification, aliases and loading."""

from models.registry.errors import (
    ChecksumMismatchError,
    InvalidManifestError,
    InvalidVersionIdError,
    RegistryError,
    UnknownTaskError,
    UnknownVersionError,
)
from models.registry.loading import LoadedModel, load_model
from models.registry.store import DEFAULT_ALIAS, DEFAULT_ROOT, TASKS, ModelRegistry
from models.registry.summary import layer_summary

__all__ = [
    "DEFAULT_ALIAS",
    "DEFAULT_ROOT",
    "TASKS",
    "ChecksumMismatchError",
    "InvalidManifestError",
    "InvalidVersionIdError",
    "LoadedModel",
    "ModelRegistry",
    "RegistryError",
    "UnknownTaskError",
    "UnknownVersionError",
    "layer_summary",
    "load_model",
]
