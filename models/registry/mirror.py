"""`StoreMirror`: a local, verified copy of an object store, in the registry's own directory layout.

The mirror's directory is an ordinary registry root, so everything that reads a local store (the service's
resolver and loaders, the CLI) reads the mirror unchanged. `sync` brings it up to date:

- Versions are write-once. One is copied only once its `manifest.json` is in the store (uploads write it
  last), into a staging directory, every file checked against the manifest's sha256, then renamed into
  place. A version that fails (a flipped byte, a missing file, a bad manifest) is refused: it never appears
  in the mirror, `refused` says why, and it is tried again only at the next full listing.
- `aliases.json` is written last, after every version it names is in place (and `warm` has loaded it); an
  alias that names a version the mirror does not have keeps the version it had, so a replica keeps serving
  what it has. `rollouts.json`, `history.jsonl` and `routes.json` are copied as they are.
- Mutable files are fetched with `If-None-Match` (a 304 costs no body); a task's versions are listed when its
  files changed, and otherwise every `FULL_LIST_EVERY_S`.

Writers (`models.registry.synced.SyncedRegistry`) use `pull_for_write`, `push` and `restore`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from models.registry.errors import ChecksumMismatchError, InvalidManifestError, StoreConflictError
from models.registry.history import HISTORY_FILE
from models.registry.layout import ALIASES_FILE, MANIFEST_FILE, task_lock
from models.registry.manifest import read_manifest, readable_mode, write_json_atomic
from models.registry.objectstore import NOT_MODIFIED, Fetched, ObjectStore
from models.registry.rollouts import ROLLOUTS_FILE
from models.registry.schema import NAME_PATTERN
from models.registry.store import ROUTES_FILE, STAGING_PREFIX

log = logging.getLogger(__name__)
MUTABLE_FILES = (ALIASES_FILE, ROLLOUTS_FILE, HISTORY_FILE)
PUSH_ORDER = (ROLLOUTS_FILE, ALIASES_FILE, HISTORY_FILE)  # the alias file is the commit; history records it after
REPLICAS_DIR = "_replicas"
FULL_LIST_EVERY_S = 30.0
HISTORY_RETRIES = 5
UNCHANGED = object()
Warm = Callable[[str, str], None]  # (task, version): load it before an alias points at it


class StoreMirror:
    """Mirrors `store` into `root`. One `sync` at a time per process; processes sharing `root` serialise
    their writes of a task under its lock."""

    def __init__(self, store: ObjectStore, root: Path) -> None:
        self.store, self.root = store, Path(root)
        self.refused: dict[str, dict[str, str]] = {}  # task -> {version: why it was refused}
        self.store_aliases: dict[str, dict[str, str]] = {}  # task -> the store's aliases, as last read
        self._etags: dict[str, str] = {}  # store path -> ETag of the copy in the mirror
        self._listed: dict[str, float] = {}  # task -> when its versions were last listed
        self._held_back: set[str] = set()  # tasks whose aliases name a version the mirror lacks
        self._lock = threading.Lock()

    # ---- reading the store -----------------------------------------------------------------------
    def sync(self, warm: Warm | None = None) -> list[tuple[str, str, str]]:
        """Bring the whole mirror up to date; the (task, alias, version) moves it made. Raises
        `StoreUnavailableError` when the store cannot be reached (the mirror is left as it was)."""
        with self._lock:
            folders, _ = self.store.list("")
            self._copy_plain(ROUTES_FILE)
            moves = []
            for task in folders:
                if NAME_PATTERN.match(task):
                    moves += self._sync_task(task, warm, full=False)
            self._sync_replicas()
            return moves

    def sync_task(self, task: str, warm: Warm | None = None) -> list[tuple[str, str, str]]:
        """One task, its versions listed whatever the last listing (before a change to it)."""
        with self._lock:
            return self._sync_task(task, warm, full=True)

    def _sync_task(self, task: str, warm: Warm | None, *, full: bool) -> list[tuple[str, str, str]]:
        directory = self.root / task
        fetched = {name: self._fetch(f"{task}/{name}") for name in MUTABLE_FILES}
        listed = self._listed.get(task)
        if (full or listed is None or task in self._held_back or time.monotonic() - listed > FULL_LIST_EVERY_S
                or any(value is not UNCHANGED for value in fetched.values())):
            self._list_versions(task, retry_refused=full or listed is None
                                or time.monotonic() - listed > FULL_LIST_EVERY_S)
        if not directory.is_dir():
            return []  # no complete version yet
        with task_lock(directory):
            for name in (ROLLOUTS_FILE, HISTORY_FILE):
                self._write(directory / name, fetched[name], f"{task}/{name}")
            aliases = fetched[ALIASES_FILE]
            if aliases is UNCHANGED and task not in self._held_back:
                return []
            if aliases is UNCHANGED:  # held back last time: read the store's again
                aliases = self._fetch(f"{task}/{ALIASES_FILE}", conditional=False)
            return self._swap_aliases(task, directory, aliases, warm)

    def _swap_aliases(self, task: str, directory: Path, fetched: Fetched | None | object,
                      warm: Warm | None) -> list[tuple[str, str, str]]:
        """Point the mirror's aliases at the store's, each only once its version is in the mirror."""
        path = f"{task}/{ALIASES_FILE}"
        if isinstance(fetched, Fetched):
            wanted = json.loads(fetched.data)
            self._etags[path] = fetched.etag
        else:
            wanted = {}
            self._etags.pop(path, None)
        self.store_aliases[task] = {str(k): str(v) for k, v in wanted.items()}
        current = _read_json(directory / ALIASES_FILE)
        served: dict[str, str] = {}
        for alias, version in self.store_aliases[task].items():
            if (directory / version / MANIFEST_FILE).is_file():
                served[alias] = version
            elif alias in current:
                served[alias] = current[alias]  # keep serving what it had
        if served != self.store_aliases[task]:
            if task not in self._held_back:
                log.warning("%s: serving %s while the store says %s (refused: %s)", task, served,
                            self.store_aliases[task], self.refused.get(task, {}))
            self._held_back.add(task)
        else:
            self._held_back.discard(task)
        moves = [(task, alias, version) for alias, version in served.items() if current.get(alias) != version]
        for _, _, version in moves:
            if warm is not None:
                warm(task, version)
        if served != current or not (directory / ALIASES_FILE).is_file():
            write_json_atomic(directory / ALIASES_FILE, served)
        return moves

    def _list_versions(self, task: str, *, retry_refused: bool) -> None:
        versions, _ = self.store.list(task)
        self._listed[task] = time.monotonic()
        for version in versions:
            if not NAME_PATTERN.match(version) or (self.root / task / version / MANIFEST_FILE).is_file():
                continue
            if version in self.refused.get(task, {}) and not retry_refused:
                continue
            self._copy_version(task, version)

    def _copy_version(self, task: str, version: str) -> None:
        """Copy one version into the mirror, verified, or record why it is refused."""
        prefix = f"{task}/{version}"
        manifest_object = self.store.get(f"{prefix}/{MANIFEST_FILE}")
        if not isinstance(manifest_object, Fetched):
            return  # its files are still being uploaded: the manifest comes last
        directory = self.root / task
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=directory))
        try:
            (staging / MANIFEST_FILE).write_bytes(manifest_object.data)
            manifest = read_manifest(staging / MANIFEST_FILE)
            if (manifest.task, manifest.version) != (task, version):
                raise InvalidManifestError(f"{prefix}: its manifest says {manifest.task}/{manifest.version}")
            expected = {manifest.weights.file: manifest.weights.sha256}
            expected.update({name: meta.sha256 for name, meta in manifest.artifacts.items()})
            for name, sha256 in expected.items():
                if not NAME_PATTERN.match(name):
                    raise InvalidManifestError(f"{prefix}: file name {name!r} is not a plain name")
                content = self.store.get(f"{prefix}/{name}")
                if not isinstance(content, Fetched):
                    raise ChecksumMismatchError(f"{prefix}: {name} is missing from the store")
                actual = hashlib.sha256(content.data).hexdigest()
                if actual != sha256:
                    raise ChecksumMismatchError(f"{prefix}: sha256 of {name} is {actual}, manifest says {sha256}")
                (staging / name).write_bytes(content.data)
            for path in (staging, *staging.iterdir()):
                os.chmod(path, readable_mode(0o755 if path.is_dir() else 0o644))
            try:
                os.rename(staging, directory / version)
            except OSError:  # another process of this replica copied it first
                if not (directory / version / MANIFEST_FILE).is_file():
                    raise
            if self.refused.get(task, {}).pop(version, None) is not None:
                log.info("%s: copied after all", prefix)
        except (ChecksumMismatchError, InvalidManifestError) as exc:
            if self.refused.setdefault(task, {}).get(version) != str(exc):
                log.error("refused %s: %s", prefix, exc)
            self.refused[task][version] = str(exc)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _sync_replicas(self) -> None:
        """Copy the heartbeats (`_replicas/*.json`) that changed; drop those gone from the store."""
        _, files = self.store.list(REPLICAS_DIR)
        local = self.root / REPLICAS_DIR
        local.mkdir(parents=True, exist_ok=True)
        for name in files:
            if name.endswith(".json") and NAME_PATTERN.match(name):
                self._write(local / name, self._fetch(f"{REPLICAS_DIR}/{name}"), f"{REPLICAS_DIR}/{name}")
        for path in local.glob("*.json"):
            if path.name not in files:
                path.unlink(missing_ok=True)
                self._etags.pop(f"{REPLICAS_DIR}/{path.name}", None)

    def _copy_plain(self, path: str) -> None:
        self._write(self.root / path, self._fetch(path), path)

    def _fetch(self, path: str, *, conditional: bool = True) -> Fetched | None | object:
        """The store's object at `path`: `UNCHANGED` when it is still the mirror's copy, None when gone."""
        result = self.store.get(path, self._etags.get(path) if conditional else None)
        if result is NOT_MODIFIED:
            return UNCHANGED
        if result is None and path not in self._etags:
            return UNCHANGED if not (self.root / path).exists() else None
        return result

    def _write(self, target: Path, fetched: Fetched | None | object, path: str) -> None:
        """Make the mirror's `target` what the store holds (`fetched` from `_fetch`)."""
        if fetched is UNCHANGED:
            return
        if isinstance(fetched, Fetched):
            _write_bytes_atomic(target, fetched.data)
            self._etags[path] = fetched.etag
        else:
            target.unlink(missing_ok=True)
            self._etags.pop(path, None)

    # ---- writing the store -----------------------------------------------------------------------
    def pull_for_write(self, task: str) -> dict[str, Fetched | None]:
        """The store's mutable files of `task`, now, copied into the mirror as they are (the caller holds the
        task's lock and is about to change them)."""
        state = {}
        for name in MUTABLE_FILES:
            fetched = self.store.get(f"{task}/{name}")
            state[name] = fetched if isinstance(fetched, Fetched) else None
            self._write(self.root / task / name, state[name], f"{task}/{name}")
        return state

    def push(self, task: str, before: dict[str, Fetched | None]) -> None:
        """Write the mutable files the caller changed since `pull_for_write`, each conditional on the ETag it
        read. The history is appended to whatever the store holds by then."""
        for name in PUSH_ORDER:
            path, local = f"{task}/{name}", self.root / task / name
            now = local.read_bytes() if local.is_file() else None
            old = before[name]
            if now == (old.data if old else None):
                continue
            if now is None:
                self.store.delete(path)
                self._etags.pop(path, None)
            elif name == HISTORY_FILE:
                self._etags[path] = self._append_history(path, old, now)
            else:
                self._etags[path] = self.store.put(path, now, if_match=old.etag if old else None,
                                                   if_absent=old is None)
        self._reconcile(task)

    def _reconcile(self, task: str) -> None:
        """After a change through this mirror: its aliases file holds the store's; serve only what it has."""
        path = self.root / task / ALIASES_FILE
        if path.is_file():
            etag = self._etags.get(f"{task}/{ALIASES_FILE}", "")
            self._swap_aliases(task, self.root / task, Fetched(path.read_bytes(), etag), None)

    def _append_history(self, path: str, old: Fetched | None, now: bytes) -> str:
        base = old.data if old else b""
        added = now[len(base):] if now.startswith(base) else now
        current = old
        for _ in range(HISTORY_RETRIES):
            try:
                data = (current.data if current else b"") + added
                return self.store.put(path, data, if_match=current.etag if current else None,
                                      if_absent=current is None)
            except StoreConflictError:
                fetched = self.store.get(path)
                current = fetched if isinstance(fetched, Fetched) else None
        raise StoreConflictError(f"{self.store.url}/{path}: the history kept changing; the change is in the "
                                 "alias file but not recorded")

    def restore(self, task: str, before: dict[str, Fetched | None]) -> None:
        """Put the mirror's mutable files back as `pull_for_write` found them (a change that did not reach
        the store must not be served here)."""
        for name in MUTABLE_FILES:
            self._write(self.root / task / name, before[name], f"{task}/{name}")
        self._reconcile(task)

    def upload_version(self, task: str, version: str) -> None:
        """Upload a version of the mirror: every file, then the manifest (what readers wait for)."""
        directory = self.root / task / version
        files = sorted(p for p in directory.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
        for path in files:
            self.store.put(f"{task}/{version}/{path.name}", path.read_bytes())
        self.store.put(f"{task}/{version}/{MANIFEST_FILE}", (directory / MANIFEST_FILE).read_bytes(), if_absent=True)

    def publish(self, path: str, data: bytes | None) -> None:
        """Write (or, with None, delete) a file of the store outside any task (a heartbeat)."""
        if data is None:
            self.store.delete(path)
        else:
            self.store.put(path, data)


def _read_json(path: Path) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(data)
        os.chmod(handle.name, readable_mode(0o644))
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
