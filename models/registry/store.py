"""`ModelRegistry`: the on-disk store of registered versions.

Layout: `<root>/<task>/<version>/{manifest.json, weights.safetensors, *.png, ...}` and
`<root>/<task>/aliases.json` ({"production": "<version>", ...}). A task is any directory of the
root holding an alias file and at least one version: no list of task names exists anywhere.
Versions are immutable once registered (written to a staging dir, then renamed); aliases move by
atomic file replace, so a reader always sees one complete version. Directories are 0755 and files
0644 (less the umask), so a service running as another user can read what a trainer wrote. Moving
aliases, the history and rollouts are the mixins' (`models.registry.promotion`, `.rollouts`, `.history`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from models.networks import count_parameters
from models.registry.schema import NAME_PATTERN, Manifest, parse_manifest
from models.registry.base_weights import difference_from_base, load_base_state, validate_spec, verify_base_weights
from models.registry.errors import ChecksumMismatchError, InvalidManifestError, UnknownTaskError, UnknownVersionError
from models.registry.layout import ALIASES_FILE, DEFAULT_ALIAS, MANIFEST_FILE, WEIGHTS_FILE, check_name, read_aliases
from models.registry.promotion import PromotionMixin
from models.registry.manifest import (
    SCHEMA_VERSION,
    read_json_object,
    read_manifest,
    readable_mode,
    sha256_file,
    utc_now,
    write_json_atomic,
)

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "store"
ROUTES_FILE = "routes.json"
_ROUTE = re.compile(r"^(/[a-z0-9][a-z0-9_-]*){1,3}$")
STAGING_PREFIX = ".staging-"
STALE_STAGING_S = 3600.0  # a staging directory this old belongs to a crashed registration


class ModelRegistry(PromotionMixin):
    """Read, register and verify model versions under `root`; promote, roll back, run canaries and
    shadows, and keep the history (`PromotionMixin` and its bases)."""

    def __init__(self, root: Path | str = DEFAULT_ROOT) -> None:
        self.root = Path(root)

    # ---- reading -------------------------------------------------------------------
    def tasks(self) -> list[str]:
        """The tasks in the store, sorted: directories with an alias file and at least one version."""
        try:
            entries = sorted(self.root.iterdir())
        except OSError:
            return []
        return [p.name for p in entries if NAME_PATTERN.match(p.name) and (p / ALIASES_FILE).is_file()
                and self._has_versions(p)]

    @staticmethod
    def _has_versions(directory: Path) -> bool:
        try:
            return any(_is_version(p) for p in directory.iterdir())
        except OSError:  # missing, or unreadable (another user's 0700 directory): nothing we can serve
            return False

    def routes(self) -> dict[str, str]:
        """Named endpoints of the store's tasks (`<root>/routes.json`: {"/digits": "digits", ...}), {} without one."""
        path = self.root / ROUTES_FILE
        if not path.is_file():
            return {}
        routes = {str(k): check_name(str(v), "task") for k, v in read_json_object(path).items()}
        bad = [route for route in routes if not _ROUTE.match(route)]
        if bad:
            raise InvalidManifestError(f"{path}: routes must look like /name or /name/name: {bad}")
        return routes

    def task_dir(self, task: str) -> Path:
        """The directory of `task`; `UnknownTaskError` when it holds no version. (A task is served, and
        listed by `tasks`, once it also has an alias file: its first promotion writes one.)"""
        check_name(task, "task")
        directory = self.root / task
        if not self._has_versions(directory):
            raise UnknownTaskError(f"unknown task {task!r}; valid: {', '.join(self.tasks()) or 'none'}")
        return directory

    def versions(self, task: str) -> list[str]:
        """Registered versions of `task`, oldest first (ids start with a UTC timestamp); dot-names
        (staging directories) and unreadable entries are never versions."""
        return sorted(p.name for p in self.task_dir(task).iterdir() if _is_version(p))

    def aliases(self, task: str) -> dict[str, str]:
        return read_aliases(self.task_dir(task))

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

    def manifest(self, task: str, ref: str = DEFAULT_ALIAS) -> Manifest:
        return read_manifest(self.version_dir(task, ref) / MANIFEST_FILE)

    def artifact_path(self, task: str, ref: str, name: str) -> Path:
        """Path of a named artifact (e.g. "learning_curves.png") recorded in the manifest."""
        manifest = self.manifest(task, ref)
        if name not in manifest.artifacts:
            has = ", ".join(manifest.artifacts) or "none"
            raise UnknownVersionError(f"version {manifest.version!r} has no artifact {name!r}; has: {has}")
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
        label: str | None = None,
        base_weights: dict[str, Any] | None = None,
    ) -> str:
        """Store `network`'s weights and `manifest` as a new immutable version; return its id.

        `manifest` holds the descriptive fields (kind, architecture, labels, preprocessing, metrics,
        training, lineage, serving); task, version, parameter count, created_at and the weights/artifact
        checksums are filled in here, and the whole is validated (`Manifest`) before anything is renamed
        into place. The id is `version`, else `<UTC time>-<label>` (default: the architecture name).
        With `base_weights` (see `models.registry.base_weights.base_weights_spec`) the network starts
        from a state dict shipped by an installed package: only the tensors that differ are stored.
        """
        directory = self.root / check_name(task, "task")
        _make_dirs(directory)
        self._sweep_staging(directory)
        version = check_name(version or self._new_version_id(directory, label or manifest["architecture"]["name"]))
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=directory))
        try:
            os.chmod(staging, readable_mode(0o755))  # mkdtemp makes 0700
            state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
            if base_weights is not None:
                state = difference_from_base(state, load_base_state(validate_spec(base_weights)))
            save_file(state, str(staging / WEIGHTS_FILE), metadata={"task": task, "version": version})
            recorded: dict[str, dict[str, str]] = {}
            for name, source in (artifacts or {}).items():
                shutil.copyfile(source, staging / check_name(name, "artifact"))
                recorded[name] = {"sha256": sha256_file(staging / name)}
            for path in staging.iterdir():
                os.chmod(path, readable_mode(0o644))
            full = parse_manifest({
                "schema_version": SCHEMA_VERSION,
                "task": task,
                "version": version,
                **manifest,
                "parameters": count_parameters(network),
                "created_at": manifest.get("created_at", utc_now()),
                "weights": {"file": WEIGHTS_FILE, "format": "safetensors", "sha256": sha256_file(staging / WEIGHTS_FILE)},
                "artifacts": recorded,
                **({"base_weights": base_weights} if base_weights is not None else {}),
            }, source=f"{task}/{version}")
            write_json_atomic(staging / MANIFEST_FILE, full.stored())
            os.rename(staging, directory / version)  # atomic; fails if the id already exists
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return version

    def sweep_staging(self) -> None:
        """Remove every task's stale staging directories (`_sweep_staging`); the service does it at startup."""
        try:
            directories = [p for p in self.root.iterdir() if p.is_dir() and NAME_PATTERN.match(p.name)]
        except OSError:
            return
        for directory in directories:
            self._sweep_staging(directory)

    @staticmethod
    def _sweep_staging(directory: Path) -> None:
        """Remove staging directories left by a crash before their rename (older than `STALE_STAGING_S`)."""
        cutoff = time.time() - STALE_STAGING_S
        for path in directory.glob(f"{STAGING_PREFIX}*"):
            try:
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                continue

    # ---- checking ------------------------------------------------------------------
    def verify_version(self, task: str, ref: str) -> Manifest:
        """Check the sha256 of the weights, every artifact and any package-shipped base weights;
        return the manifest or raise. Works on a registered task's unaliased versions too."""
        directory = self.root / check_name(task, "task") / check_name(ref)
        if not (directory / MANIFEST_FILE).is_file():
            directory = self.version_dir(task, ref)
        manifest = read_manifest(directory / MANIFEST_FILE)
        files = {manifest.weights.file: manifest.weights.sha256}
        files.update({name: meta.sha256 for name, meta in manifest.artifacts.items()})
        for name, expected in files.items():
            path = directory / name
            if not path.is_file():
                raise ChecksumMismatchError(f"{task}/{manifest.version}: {name} is missing")
            actual = sha256_file(path)
            if actual != expected:
                raise ChecksumMismatchError(
                    f"{task}/{manifest.version}: sha256 of {name} is {actual}, manifest says {expected}"
                )
        if manifest.base_weights is not None:
            verify_base_weights(manifest.base_weights.model_dump())
        return manifest

    @staticmethod
    def _new_version_id(directory: Path, label: str) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{label}"
        candidate, n = base, 2
        while (directory / candidate).exists():
            candidate, n = f"{base}-{n}", n + 1
        return candidate


def _is_version(path: Path) -> bool:
    try:
        return not path.name.startswith(".") and (path / MANIFEST_FILE).is_file()
    except OSError:  # unreadable
        return False


def _make_dirs(directory: Path) -> None:
    """`directory` and its parents, 0755 less the umask whatever mkdir's default."""
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    for path in missing:
        os.chmod(path, readable_mode(0o755))


