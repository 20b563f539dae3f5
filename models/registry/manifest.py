"""The manifest: everything needed to rebuild, serve and audit one registered version."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from models.registry.errors import InvalidManifestError

SCHEMA_VERSION = 1
REQUIRED_FIELDS = (
    "schema_version",
    "task",
    "version",
    "architecture",
    "parameters",
    "labels",
    "preprocessing",
    "metrics",
    "training",
    "lineage",
    "created_at",
    "weights",
)


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def git_commit(cwd: Path | None = None) -> str | None:
    """The current git commit of the code (with "-dirty" when uncommitted changes exist), or None."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def validate_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """Return `manifest` if it has every required field, else raise `InvalidManifestError`."""
    missing = [field for field in REQUIRED_FIELDS if field not in manifest]
    if missing:
        raise InvalidManifestError(f"manifest is missing fields: {', '.join(missing)}")
    architecture = manifest["architecture"]
    if not isinstance(architecture, dict) or "name" not in architecture:
        raise InvalidManifestError("manifest 'architecture' must be an object with a 'name'")
    weights = manifest["weights"]
    if not isinstance(weights, dict) or not {"file", "sha256"} <= weights.keys():
        raise InvalidManifestError("manifest 'weights' must have 'file' and 'sha256'")
    return manifest


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; `InvalidManifestError` for an unreadable file or another JSON type."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidManifestError(f"cannot read {path}: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidManifestError(f"{path} is not a JSON object")
    return payload


def read_manifest(path: Path) -> dict[str, Any]:
    return validate_manifest(read_json_object(path))


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so readers see either the old or the new file, never a half-written one."""
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(json.dumps(payload, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
