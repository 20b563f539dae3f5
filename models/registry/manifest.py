"""Reading and writing manifests (the schema is `models.registry.schema.Manifest`), and file checksums."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from models.registry.errors import InvalidManifestError
from models.registry.schema import Manifest, parse_manifest

SCHEMA_VERSION = 1


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


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; `InvalidManifestError` for an unreadable file or another JSON type."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidManifestError(f"cannot read {path}: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidManifestError(f"{path} is not a JSON object")
    return payload


def read_manifest(path: Path) -> Manifest:
    """The typed manifest at `path`; `InvalidManifestError` names the file and the bad field."""
    return parse_manifest(read_json_object(path), source=str(path))


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so readers see either the old or the new file, never a half-written one."""
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(json.dumps(payload, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, readable_mode(0o644))  # NamedTemporaryFile makes 0600: the service may be another uid
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def readable_mode(mode: int) -> int:
    """`mode` less the process umask: registry files are readable by a service running as another user."""
    return mode & ~_umask()


@functools.cache
def _umask() -> int:
    # os.umask can only be read by setting it: done once, before any registry thread writes.
    umask = os.umask(0o022)
    os.umask(umask)
    return umask
