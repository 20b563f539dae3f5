"""Domain errors of the registry; the service maps each to one HTTP status in one place."""


class RegistryError(Exception):
    """Base class of registry errors."""


class UnknownTaskError(RegistryError):
    """No such task in the registry."""


class UnknownVersionError(RegistryError):
    """No such version or alias for a task."""


class InvalidVersionIdError(RegistryError):
    """A version or alias name that could never exist (bad characters, path tricks)."""


class ChecksumMismatchError(RegistryError):
    """A weights or artifact file does not match the sha256 recorded in its manifest."""


class InvalidManifestError(RegistryError):
    """A manifest is missing fields, names an unknown architecture, or does not match its weights."""
