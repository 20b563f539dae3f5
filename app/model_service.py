"""`ModelService`: resolves aliases, loads and caches versions, and runs inference off the event loop.

A request resolves its version once and keeps the returned `LoadedModel` for its whole
life, so a promotion in between never mixes two versions within one request.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from typing import Any, Callable, TypeVar

import asyncio
from concurrent.futures import ThreadPoolExecutor
import torch

from app.batching import BatchObserver, BatchPolicy, MicroBatcher
from models.onnx_backend import BackendError
from models.registry import DEFAULT_ALIAS, LoadedModel, ModelRegistry, load_model

log = logging.getLogger(__name__)
T = TypeVar("T")


def pick_device(name: str) -> torch.device:
    """The service's device setting: `auto` means CUDA when present."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("MODELHOUSE_DEVICE=cuda but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _stat_key(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_size


class ModelService:
    """Thread-safe cache of loaded versions, keyed by (task, version)."""

    def __init__(self, registry: ModelRegistry, device: torch.device, *, max_loaded: int, workers: int,
                 batch_policy: BatchPolicy | None = None, task_policies: dict[str, dict[str, Any]] | None = None,
                 backends: dict[str, str] | None = None, threads: int = 1) -> None:
        self.registry = registry
        self.backends, self.threads = backends or {}, threads
        self.batch_policy = batch_policy or BatchPolicy()
        self.task_policies = task_policies or {}
        self._batchers: dict[tuple[str, str], MicroBatcher] = {}
        self.device = device
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._load_locks: dict[tuple[str, str], threading.Lock] = {}
        self._alias_cache: dict[str, tuple[tuple[int, int, int], dict[str, str]]] = {}
        self._task_paths: dict[str, tuple[str, str]] = {}
        self._resolved: dict[tuple[str, str], tuple[tuple[object, object], str]] = {}
        # A dedicated pool (not the framework's shared one): inference never waits behind other work,
        # and asyncio's run_in_executor is the cheapest hop off the event loop.
        self.workers = workers
        self._executor: ThreadPoolExecutor | None = None
        self.readiness: dict[str, str] = {}
        self.readiness_backends: dict[str, str] = {}
        self.ready = False

    # ---- resolution and loading (blocking; call via `run`) -------------------------
    def resolve(self, task: str, ref: str = DEFAULT_ALIAS) -> str:
        """Version id for `ref`, as `ModelRegistry.resolve` says; re-asked only when the task's directory
        or its alias file changed on disk (two stats per request: a promotion by another process or
        worker is seen by the next request)."""
        key = self._disk_state(task)
        cached = self._resolved.get((task, ref))
        if cached is not None and cached[0] == key:
            return cached[1]
        version = self.registry.resolve(task, ref)
        self._resolved[(task, ref)] = (key, version)  # only names that resolve: bounded by the registry
        return version

    def _disk_state(self, task: str) -> tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]:
        """(task directory, aliases.json) as (mtime_ns, inode, size): a new version directory changes the
        first, a promotion (an atomic rename of aliases.json) the second."""
        paths = self._task_paths.get(task)
        if paths is None:
            directory = self.registry.task_dir(task)  # raises UnknownTaskError for a bad name
            paths = self._task_paths[task] = (str(directory), str(directory / "aliases.json"))
        return _stat_key(paths[0]), _stat_key(paths[1])

    def _aliases(self, task: str) -> dict[str, str]:
        key = _stat_key(str(self.registry.task_dir(task) / "aliases.json"))
        if key is None:
            return {}
        cached = self._alias_cache.get(task)
        if cached and cached[0] == key:
            return cached[1]
        aliases = self.registry.aliases(task)
        self._alias_cache[task] = (key, aliases)
        return aliases

    def get_loaded(self, task: str, ref: str = DEFAULT_ALIAS) -> LoadedModel | None:
        """The model if already loaded (cheap enough for the event loop: a stat and dict lookups), else None."""
        key = (task, self.resolve(task, ref))
        with self._lock:
            return self._loaded.get(key)

    async def acquire(self, task: str, ref: str = DEFAULT_ALIAS) -> LoadedModel:
        """The model for `task`/`ref`: from the cache, or loaded in a worker thread on first use."""
        return self.get_loaded(task, ref) or await self.run(self.get, task, ref)

    def get(self, task: str, ref: str = DEFAULT_ALIAS) -> LoadedModel:
        """The loaded model for `task`/`ref`, loading (and verifying) it on first use."""
        key = (task, self.resolve(task, ref))
        with self._lock:
            model = self._loaded.get(key)
            if model is not None:
                self._loaded.move_to_end(key)
                return model
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:  # one load per version even under concurrent first requests
            with self._lock:
                if key in self._loaded:
                    return self._loaded[key]
            model = self._load(*key)
            log.info("loaded %s/%s on %s (%s)", key[0], key[1], self.device, model.backend)
            with self._lock:
                self._loaded[key] = model
                self._evict()
            return model

    def _load(self, task: str, version: str) -> LoadedModel:
        """Load with the task's configured backend; an optimisation that cannot run here never stops
        serving: the version is loaded with PyTorch instead, and the reason logged."""
        backend = self.backends.get(task, "torch")
        try:
            return load_model(self.registry, task, version, self.device, backend=backend, threads=self.threads)
        except BackendError as exc:
            log.warning("%s/%s: %s; serving it with torch", task, version, exc)
            return load_model(self.registry, task, version, self.device)

    def _evict(self) -> None:
        pinned = {(task, v) for task in {k[0] for k in self._loaded} for v in self._aliases(task).values()}
        for key in list(self._loaded):
            if len(self._loaded) <= self.max_loaded:
                break
            if key not in pinned:
                del self._loaded[key]

    def preload(self) -> None:
        """Load every task's production version; record per-task status for /readyz."""
        status: dict[str, str] = {}
        backends: dict[str, str] = {}
        ok = True
        for task in self.registry.tasks():
            if DEFAULT_ALIAS not in self.registry.aliases(task):
                continue
            try:
                model = self.get(task)
                status[task], backends[task] = model.version, model.backend
            except Exception as exc:  # any failure is reported by /readyz, not fatal to the process
                log.error("cannot load %s/%s: %s", task, DEFAULT_ALIAS, exc)
                status[task] = f"error: {exc}"
                ok = False
        self.readiness, self.readiness_backends, self.ready = status, backends, ok

    # ---- batching ------------------------------------------------------------------
    def batcher(self, model: LoadedModel, process: Callable[[list[Any]], list[Any]],
                observer: Callable[[], BatchObserver] | None = None) -> MicroBatcher:
        """The micro-batcher of `model`, created on first use with `process` and `observer()`
        (event-loop thread only; later calls reuse it and ignore both arguments).

        Policy precedence: settings' per-task overrides > the manifest's "serving" block > global settings.
        """
        key = (model.task, model.version)
        batcher = self._batchers.get(key)
        if batcher is None:
            policy = self.batch_policy.merged(model.manifest.get("serving")).merged(self.task_policies.get(model.task))
            batcher = MicroBatcher(process, policy, self.run, observer() if observer else None)
            self._batchers[key] = batcher
        return batcher

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        self._batchers.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # ---- running blocking work -----------------------------------------------------
    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run blocking `func(*args)` in a worker thread, at most `workers` at a time."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="inference")
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)
