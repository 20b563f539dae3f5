"""`ModelRegistry`: the on-disk store of registered versions.

Layout: `<root>/<task>/<version>/{manifest.json, weights.safetensors, *.png, ...}` and
`<root>/<task>/aliases.json` ({"production": "<version>", ...}). Versions are immutable
once registered (written to a temp dir, then renamed); aliases move by atomic file
replace, so a reader always sees one complete version.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from models.networks import count_parameters
from models.registry.base_weights import difference_from_base, load_base_state, validate_spec, verify_base_weights
from models.registry.errors import (
    ChecksumMismatchError,
    InvalidVersionIdError,
    UnknownTaskError,
    UnknownVersionError,
)
from models.registry.manifest import (
    SCHEMA_VERSION,
    read_json_object,
    read_manifest,
    sha256_file,
    utc_now,
    validate_manifest,
    write_json_atomic,
)

TASKS: tuple[str, ...] = ("digits", "components", "imagenet", "rnn")
DEFAULT_ALIAS = "production"
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
ALIASES_FILE = "aliases.json"
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "store"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


def check_name(name: str, what: str = "version") -> str:
    """Return `name` if it is a safe version/alias id (no path separators, no leading dot)."""
    if not _NAME.match(name):
        raise InvalidVersionIdError(f"invalid {what} {name!r}: use letters, digits, '.', '_' or '-'")
    return name


class ModelRegistry:
    """Read, register, verify and promote model versions under `root`."""

    def __init__(self, root: Path | str = DEFAULT_ROOT) -> None:
        self.root = Path(root)

    # ---- reading -------------------------------------------------------------------
    def tasks(self) -> list[str]:
        """Known tasks, in their canonical order."""
        return list(TASKS)

    def task_dir(self, task: str) -> Path:
        if task not in TASKS:
            raise UnknownTaskError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
        return self.root / task

    def versions(self, task: str) -> list[str]:
        """Registered versions of `task`, oldest first (ids start with a UTC timestamp)."""
        directory = self.task_dir(task)
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file())

    def aliases(self, task: str) -> dict[str, str]:
        path = self.task_dir(task) / ALIASES_FILE
        if not path.is_file():
            return {}
        return {str(k): str(v) for k, v in read_json_object(path).items()}

    def resolve(self, task: str, ref: str = DEFAULT_ALIAS) -> str:
        """The version id that `ref` (a version id or an alias) names for `task`."""
        check_name(ref, "version or alias")
        directory = self.task_dir(task)
        if (directory / ref / MANIFEST_FILE).is_file():
            return ref
        aliases = self.aliases(task)
        if ref in aliases:
            return aliases[ref]
        known = self.versions(task)
        hint = f"aliases: {', '.join(sorted(aliases)) or 'none'}; versions: {', '.join(known) or 'none'}"
        raise UnknownVersionError(f"task {task!r} has no version or alias {ref!r} ({hint})")

    def version_dir(self, task: str, ref: str = DEFAULT_ALIAS) -> Path:
        return self.task_dir(task) / self.resolve(task, ref)

    def manifest(self, task: str, ref: str = DEFAULT_ALIAS) -> dict[str, Any]:
        return read_manifest(self.version_dir(task, ref) / MANIFEST_FILE)

    def artifact_path(self, task: str, ref: str, name: str) -> Path:
        """Path of a named artifact (e.g. "learning_curves.png") recorded in the manifest."""
        manifest = self.manifest(task, ref)
        artifacts = manifest.get("artifacts", {})
        if name not in artifacts:
            raise UnknownVersionError(f"version {manifest['version']!r} has no artifact {name!r}; has: {', '.join(artifacts) or 'none'}")
        return self.version_dir(task, ref) / name

    # ---- writing -------------------------------------------------------------------
    def register(
        self,
        task: str,
        network: nn.Module,
        manifest: dict[str, Any],
        *,
        artifacts: dict[str, Path] | None = None,
        version: str | None = None,
        base_weights: dict[str, Any] | None = None,
    ) -> str:
        """Store `network`'s weights and `manifest` as a new immutable version; return its id.

        `manifest` holds the descriptive fields (architecture, labels, preprocessing,
        metrics, training, lineage); task, version, parameter count, created_at and the
        weights/artifact checksums are filled in here. With `base_weights` (see
        `models.registry.base_weights.base_weights_spec`) the network starts from a state dict
        shipped by an installed package: only the tensors that differ from it are stored.
        """
        directory = self.task_dir(task)
        directory.mkdir(parents=True, exist_ok=True)
        version = check_name(version or self._new_version_id(task, manifest["architecture"]["name"]))
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=directory))
        try:
            state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
            if base_weights is not None:
                state = difference_from_base(state, load_base_state(validate_spec(base_weights)))
            save_file(state, str(staging / WEIGHTS_FILE), metadata={"task": task, "version": version})
            recorded: dict[str, dict[str, str]] = {}
            for name, source in (artifacts or {}).items():
                shutil.copyfile(source, staging / check_name(name, "artifact"))
                recorded[name] = {"sha256": sha256_file(staging / name)}
            full = {
                "schema_version": SCHEMA_VERSION,
                "task": task,
                "version": version,
                **manifest,
                "parameters": count_parameters(network),
                "created_at": manifest.get("created_at", utc_now()),
                "weights": {"file": WEIGHTS_FILE, "format": "safetensors", "sha256": sha256_file(staging / WEIGHTS_FILE)},
                "artifacts": recorded,
            }
            if base_weights is not None:
                full["base_weights"] = base_weights
            write_json_atomic(staging / MANIFEST_FILE, validate_manifest(full))
            os.rename(staging, directory / version)  # atomic; fails if the id already exists
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return version

    def promote(self, task: str, ref: str, alias: str = DEFAULT_ALIAS) -> str:
        """Point `alias` at the version `ref` names, after verifying its files; return the version id."""
        check_name(alias, "alias")
        version = self.resolve(task, ref)
        self.verify_version(task, version)
        with self._alias_lock(task):  # read-modify-write: serialise writers (service, CLI, trainers)
            aliases = self.aliases(task)
            aliases[alias] = version
            write_json_atomic(self.task_dir(task) / ALIASES_FILE, aliases)
        return version

    @contextmanager
    def _alias_lock(self, task: str) -> Iterator[None]:
        directory = self.task_dir(task)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".aliases.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ---- checking ------------------------------------------------------------------
    def verify_version(self, task: str, ref: str) -> dict[str, Any]:
        """Check the sha256 of the weights, every artifact and any package-shipped base weights;
        return the manifest or raise."""
        directory = self.version_dir(task, ref)
        manifest = read_manifest(directory / MANIFEST_FILE)
        files = {manifest["weights"]["file"]: manifest["weights"]["sha256"]}
        files.update({name: meta["sha256"] for name, meta in manifest.get("artifacts", {}).items()})
        for name, expected in files.items():
            path = directory / name
            if not path.is_file():
                raise ChecksumMismatchError(f"{task}/{manifest['version']}: {name} is missing")
            actual = sha256_file(path)
            if actual != expected:
                raise ChecksumMismatchError(
                    f"{task}/{manifest['version']}: sha256 of {name} is {actual}, manifest says {expected}"
                )
        if "base_weights" in manifest:
            verify_base_weights(manifest["base_weights"])
        return manifest

    def _new_version_id(self, task: str, architecture: str) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{architecture}"
        existing = set(self.versions(task))
        candidate, n = base, 2
        while candidate in existing or (self.task_dir(task) / candidate).exists():
            candidate, n = f"{base}-{n}", n + 1
        return candidate


