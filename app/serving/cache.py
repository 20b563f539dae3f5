"""`ModelCache`: loaded versions, loaded once each (even under concurrent first requests), LRU-evicted."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

from models.onnx_backend import BackendError
from models.registry import Manifest, ModelRegistry
from models.runtime import LoadedModel, load_model

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (task, version id)


class ModelCache:
    """Thread-safe cache of loaded versions keyed by (task, version id). `backend_for(task, manifest)`
    chooses what runs each; `pinned()` names the keys eviction must keep (every aliased version)."""

    def __init__(self, registry: ModelRegistry, device: torch.device, *, max_loaded: int, threads: int,
                 backend_for: Callable[[str, Manifest], str], pinned: Callable[[], set[Key]]) -> None:
        self.registry, self.device, self.max_loaded, self.threads = registry, device, max_loaded, threads
        self.backend_for, self.pinned = backend_for, pinned
        self._loaded: OrderedDict[Key, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._load_locks: dict[Key, threading.Lock] = {}

    def peek(self, key: Key) -> LoadedModel | None:
        """The model if already loaded (cheap enough for the event loop), else None."""
        with self._lock:
            return self._loaded.get(key)

    def get(self, key: Key) -> LoadedModel:
        """The loaded model for `key`, loading (and verifying) it on first use. Blocking."""
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
        """Load with the chosen backend; an optimisation that cannot run here never stops serving: the
        version is loaded with PyTorch instead, and the reason logged."""
        backend = self.backend_for(task, self.registry.manifest(task, version))
        try:
            return load_model(self.registry, task, version, self.device, backend=backend, threads=self.threads)
        except BackendError as exc:
            log.warning("%s/%s: %s; serving it with torch", task, version, exc)
            return load_model(self.registry, task, version, self.device)

    def _evict(self) -> None:
        if len(self._loaded) <= self.max_loaded:
            return
        pinned = self.pinned()
        for key in list(self._loaded):
            if len(self._loaded) <= self.max_loaded:
                break
            if key not in pinned:
                del self._loaded[key]
