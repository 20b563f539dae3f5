"""The store as a URL: `open_registry` gives the registry of a local directory or of an object store.

- a path, or `file:///path`: `ModelRegistry` on that directory, as always;
- `s3://bucket[/prefix]`: `SyncedRegistry`, whose truth is the bucket and whose `root` is a local
  mirror (`models.registry.mirror`, default under `$XDG_CACHE_HOME/modelhouse/stores/`).

A `SyncedRegistry` reads what its mirror holds. Every change goes to the store: `register` uploads the
version (files first, manifest last); anything under `alias_lock` (a promotion, a rollback, a canary, a
shadow, a history event) first brings the task's mirror up to date, then pushes the files it changed, each
a conditional write on the ETag it read (If-Match). Where the store honours conditional writes (AWS S3,
MinIO), of two changes racing through two replicas one gets `StoreConflictError`; where it ignores them
(rclone's S3 server), the last write wins: docs/deployment.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from torch import nn

from models.registry.errors import InvalidStoreURLError
from models.registry.layout import check_name
from models.registry.layout import MANIFEST_FILE
from models.registry.mirror import MUTABLE_FILES, StoreMirror
from models.registry.objectstore import SCHEMES, ObjectStore, parse_s3_url
from models.registry.store import ROUTES_FILE, ModelRegistry


def local_path(store: str | Path) -> Path | None:
    """The directory a local store names (a path or file:// URL); None for an object store URL.
    `InvalidStoreURLError` for any other scheme."""
    text = str(store)
    if "://" not in text:
        return Path(text)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InvalidStoreURLError(f"invalid store URL {text!r}: a file URL names a local path (file:///path; "
                                       "an object store is s3://bucket[/prefix])")
        return Path(unquote(parsed.path))
    if parsed.scheme == "s3":
        parse_s3_url(text)
        return None
    raise InvalidStoreURLError(f"invalid store URL {text!r}: schemes are {', '.join(SCHEMES)} "
                               "(s3://bucket[/prefix], file:///path) or a plain path")


def default_cache_dir(url: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "modelhouse" / "stores" / hashlib.sha256(url.encode()).hexdigest()[:16]


STORE_HELP = ("the registry: a directory, file:///path, or s3://bucket[/prefix] (endpoint and keys from "
              "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")


def store_argument(value: str) -> str:
    """argparse `type` of a `--store` option: the value, once it names a valid store."""
    try:
        local_path(value)
    except InvalidStoreURLError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def open_registry(store: str | Path, cache_dir: Path | None = None, *, sync: bool = False) -> ModelRegistry:
    """The registry of `store` (see the module docstring); `cache_dir` is an object store's mirror, brought
    up to date first with `sync` (a change needs no sync: it brings its task up to date itself)."""
    path = local_path(store)
    if path is not None:
        return ModelRegistry(path)
    registry = SyncedRegistry(str(store), cache_dir or default_cache_dir(str(store)))
    if sync:
        registry.mirror.sync()
    return registry


class SyncedRegistry(ModelRegistry):
    """A registry whose versions, aliases, rollouts and history live in an object store at `url`; `root`
    is the local mirror every read is served from. `mirror.sync()` brings it up to date."""

    def __init__(self, url: str, cache_dir: Path | str) -> None:
        super().__init__(cache_dir)
        self.url = url
        self.mirror = StoreMirror(ObjectStore(url), self.root)
        self._depth = threading.local()

    @contextmanager
    def alias_lock(self, task: str) -> Iterator[None]:
        """The task's lock, around a change made against the store's current files and pushed to it
        (`StoreUnavailableError` when the store cannot be reached, `StoreConflictError` when a conditional
        write loses a race; the mirror then holds the store's files again, not the change)."""
        depth: dict[str, int] = self._depth.__dict__.setdefault("tasks", {})
        if depth.get(task):
            depth[task] += 1
            try:
                yield
            finally:
                depth[task] -= 1
            return
        self.mirror.sync_task(check_name(task, "task"))  # every version, so the gates can read the incumbent
        with super().alias_lock(task):
            depth[task] = 1
            before = self.mirror.pull_for_write(task)
            try:
                yield
                self.mirror.push(task, before)
            except BaseException:
                self.mirror.restore(task, before)
                raise
            finally:
                del depth[task]

    def register(self, task: str, network: nn.Module, manifest: dict[str, Any], **kwargs: Any) -> str:
        """Register into the mirror, then upload the version to the store (its manifest last)."""
        version = super().register(task, network, manifest, **kwargs)
        self.mirror.upload_version(task, version)
        return version


def upload(source: ModelRegistry, url: str, tasks: list[str] | None = None) -> list[str]:
    """Copy `source`'s tasks (default: all) into the object store at `url`: each version the store lacks
    (files, then manifest), and each task's alias, rollout and history files and the routes only where the
    store has none (a live fleet's aliases are never overwritten). Returns the "task/version" uploaded."""
    store = ObjectStore(url)
    mirror = StoreMirror(store, source.root)
    uploaded = []
    for task in tasks or source.tasks():
        for version in source.versions(task):
            if store.get(f"{task}/{version}/{MANIFEST_FILE}") is None:
                mirror.upload_version(task, version)
                uploaded.append(f"{task}/{version}")
        for name in MUTABLE_FILES:
            _upload_if_absent(store, source.root / task / name, f"{task}/{name}")
    _upload_if_absent(store, source.root / ROUTES_FILE, ROUTES_FILE)
    return uploaded


def _upload_if_absent(store: ObjectStore, path: Path, key: str) -> None:
    if path.is_file() and store.get(key) is None:
        store.put(key, path.read_bytes(), if_absent=True)
