"""The model registry: store, manifest schema, verification, aliases (gated promotion, rollback, canaries,
shadows, history) and loading verified networks."""

from models.registry.errors import (
    ChecksumMismatchError,
    InvalidManifestError,
    InvalidRolloutError,
    InvalidVersionIdError,
    PromotionRefusedError,
    RegistryError,
    StoreConflictError,
    StoreUnavailableError,
    UnknownTaskError,
    UnknownVersionError,
)
from models.registry.schema import MAX_NAME_LENGTH, Manifest
from models.registry.store import DEFAULT_ALIAS, DEFAULT_ROOT, ModelRegistry
from models.registry.loading import load_network
from models.registry.summary import layer_summary

__all__ = [
    "DEFAULT_ALIAS",
    "DEFAULT_ROOT",
    "MAX_NAME_LENGTH",
    "ChecksumMismatchError",
    "InvalidManifestError",
    "InvalidRolloutError",
    "InvalidVersionIdError",
    "Manifest",
    "ModelRegistry",
    "PromotionRefusedError",
    "RegistryError",
    "StoreConflictError",
    "StoreUnavailableError",
    "UnknownTaskError",
    "UnknownVersionError",
    "layer_summary",
    "load_network",
]
