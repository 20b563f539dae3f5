"""`VersionResolver`: which version an alias or id names, re-asked of the registry only when the disk changed."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from models.registry import DEFAULT_ALIAS, ModelRegistry
from models.registry.rollouts import ROLLOUTS_FILE, AliasRollout
from models.registry.store import ALIASES_FILE

MAX_CACHED_TASKS = 1024

StatKey = tuple[int, int, int] | None
T = TypeVar("T")


def stat_key(path: str) -> StatKey:
    """(mtime_ns, inode, size) of `path`, None when it does not exist or cannot (a name from a request that
    is too long or not a directory's: the registry then refuses the name itself, with a 404)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_size


class VersionResolver:
    """Resolves (task, ref) to a version id with two stats per call: the task directory (a new version)
    and its aliases.json (a promotion: an atomic rename); a third for an alias's rollouts.json. A promotion by another process, worker or
    replica sharing the store, and a task copied in while the service runs, are seen by the next request."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._resolved: dict[tuple[str, str], tuple[tuple[StatKey, StatKey], str]] = {}
        self._aliases: dict[str, tuple[StatKey, dict[str, str]]] = {}
        self._rollouts: dict[str, tuple[StatKey, dict[str, AliasRollout]]] = {}
        self._task_paths: dict[str, tuple[str, str, str]] = {}

    def _paths(self, task: str) -> tuple[str, str, str]:
        paths = self._task_paths.get(task)
        if paths is None:
            directory = self.registry.root / task
            paths = (str(directory), str(directory / ALIASES_FILE), str(directory / ROLLOUTS_FILE))
            if len(self._task_paths) < MAX_CACHED_TASKS:  # names from requests: bounded
                self._task_paths[task] = paths
        return paths

    def resolve(self, task: str, ref: str = DEFAULT_ALIAS) -> str:
        """The version id `ref` names; the registry's errors for an unknown task, version or alias."""
        task_path, alias_path, _ = self._paths(task)
        key = (stat_key(task_path), stat_key(alias_path))
        cached = self._resolved.get((task, ref))
        if cached is not None and cached[0] == key and key[0] is not None:
            return cached[1]
        version = self.registry.resolve(task, ref)  # validates names, raises for unknown ones
        self._resolved[(task, ref)] = (key, version)  # only names that resolve: bounded by the registry
        return version

    def aliases(self, task: str) -> dict[str, str]:
        """`task`'s aliases, re-read only when aliases.json changed ({} for a task that is gone)."""
        return self._reread(self._aliases, task, self._paths(task)[1], self.registry.aliases)

    def rollouts(self, task: str) -> dict[str, AliasRollout]:
        """`task`'s canaries and shadows by alias, re-read only when rollouts.json changed ({} without one)."""
        return self._reread(self._rollouts, task, self._paths(task)[2], self.registry.rollouts)

    @staticmethod
    def _reread(cache: dict[str, tuple[StatKey, T]], task: str, path: str, read: Callable[[str], T]) -> T | dict:
        """`read(task)`, from `cache` while `path`'s stat is unchanged; {} while the file does not exist."""
        key = stat_key(path)
        if key is None:
            return {}
        cached = cache.get(task)
        if cached is not None and cached[0] == key:
            return cached[1]
        value = read(task)
        cache[task] = (key, value)
        return value
