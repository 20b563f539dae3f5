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


class PromotionRefusedError(RegistryError):
    """A promotion gate refuses the candidate against the alias's incumbent; `reasons` says why, one line
    each. Promoting with `force` overrides it (and records what was overridden)."""

    def __init__(self, message: str, reasons: list[str]) -> None:
        super().__init__(f"{message}: {'; '.join(reasons)}")
        self.reasons = list(reasons)

    @property
    def details(self) -> dict[str, list[str]]:
        """What an API answer carries beside the message (`app.errors`)."""
        return {"reasons": self.reasons}


class InvalidRolloutError(RegistryError):
    """A canary, shadow or rollback that cannot be: a value out of range, a candidate that is already the
    incumbent, nothing to roll back to. The message names the valid range."""


class StoreUnavailableError(RegistryError):
    """The store cannot be written (read-only, full, gone): the service's state, not the request's."""



class StoreConflictError(RegistryError):
    """A conditional write lost a race: the file changed in the store since it was read. Retry the change."""


class InvalidStoreURLError(RegistryError, ValueError):
    """A store URL with an unknown scheme or no bucket; the message names the valid forms."""
