"""The names and shared files of a task directory, and the lock every writer of its mutable files takes.

A task directory holds immutable versions and three mutable files: `aliases.json` (where each alias
points), `history.jsonl` (what moved, when, by whom) and `rollouts.json` (canaries and shadows). Every
read-modify-write of them happens under one exclusive lock per task (`task_lock`), so the service, the
CLI and trainers on one host never interleave their changes.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from models.registry.errors import InvalidVersionIdError, StoreUnavailableError
from models.registry.manifest import read_json_object
from models.registry.schema import MAX_NAME_LENGTH, NAME_PATTERN

DEFAULT_ALIAS = "production"
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
ALIASES_FILE = "aliases.json"
LOCK_FILE = ".aliases.lock"

_held = threading.local()  # .depth: {lock path: how many times this thread holds it}


def check_name(name: str, what: str = "version") -> str:
    """Return `name` if it is a safe task/version/alias id (no path separators, no leading dot)."""
    if not NAME_PATTERN.match(name):
        raise InvalidVersionIdError(f"invalid {what} {name!r}: use up to {MAX_NAME_LENGTH} letters, digits, "
                                    "'.', '_' or '-', starting with a letter or digit")
    return name


def read_aliases(directory: Path) -> dict[str, str]:
    """The task directory's {alias: version}; {} before its first promotion."""
    path = directory / ALIASES_FILE
    if not path.is_file():
        return {}
    return {str(k): str(v) for k, v in read_json_object(path).items()}


@contextmanager
def task_lock(directory: Path) -> Iterator[None]:
    """Hold the exclusive lock of `directory`'s aliases, history and rollouts (flock on `.aliases.lock`).

    Re-entrant within one thread (a promotion that records an event takes it once); other threads and
    processes wait. flock serialises writers across hosts only where the file system makes it a server-side
    lock (NFSv4 without `local_lock`; docs/deployment.md); an object store has no such lock.
    """
    key = str(directory.resolve() / LOCK_FILE)  # one key per file however it is reached (a second flock would wait)
    depth: dict[str, int] = _held.__dict__.setdefault("depth", {})
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    try:
        fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o644)  # 0644 less the umask, like every registry file
    except OSError as exc:
        raise StoreUnavailableError(f"cannot write the store at {directory}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        depth[key] = 1
        try:
            yield
        except OSError as exc:  # a write under the lock failed (disk full, read-only remount)
            raise StoreUnavailableError(f"cannot write the store at {directory}: {exc.strerror or exc}") from exc
        finally:
            del depth[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
