"""`ModelServer`: the one request pipeline of every prediction route, and the serving state behind it.

A request resolves its version once and keeps the returned `LoadedModel` for its whole life, so a
promotion in between never mixes two versions within one request. Per request: resolve and acquire
the version, let its kind decode the request, queue the items into the version's micro-batcher
(503 when full, 504 past the deadline), let the kind encode the answer, count it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import torch
from pydantic import BaseModel

from app.batching import BatchPolicy, QueueFullError, gather_with_timeout
from app.errors import ApiError
from app.kinds import KINDS, Decoded, ModelKind, RawRequest
from app.metrics import Metrics
from app.serving.batchers import Batchers
from app.serving.cache import Key, ModelCache
from app.serving.pool import InferencePool
from app.prediction_log import PredictionLog
from app.request_ids import current_request_id
from app.serving.control import RolloutControl
from app.serving.heartbeat import Heartbeat, default_replica_id
from app.serving.resolver import VersionResolver
from app.serving.rollouts import is_server_error
from app.serving.shadow import ShadowJob
from app.serving.store_sync import StorePoller
from app.settings import Settings
from models.registry import DEFAULT_ALIAS, Manifest, ModelRegistry, layer_summary
from models.registry.synced import SyncedRegistry
from models.preprocessing import example_input
from models.runtime import LoadedModel

log = logging.getLogger(__name__)
R = TypeVar("R")
PREDICTION_LOG_TOP_K = 5  # labels per input in the prediction log


def _kind_response(kind: ModelKind, model: LoadedModel, decoded: Decoded, outcomes: list[Any]) -> BaseModel:
    return kind.encode_response(model, decoded, outcomes)


class ModelServer:
    """Serves every task of `registry` with `settings`; build one per app (see `app.main.create_app`)."""

    def __init__(self, settings: Settings, registry: ModelRegistry, device: torch.device, metrics: Metrics) -> None:
        self.settings, self.registry, self.device, self.metrics = settings, registry, device, metrics
        self.kinds: dict[str, ModelKind] = {name: kind(settings) for name, kind in KINDS.items()}
        self.resolver = VersionResolver(registry)
        self.pool = InferencePool(settings.inference_workers)
        self.cache = ModelCache(registry, device, max_loaded=settings.max_loaded_models, threads=settings.torch_threads,
                                backend_for=self.backend_for, pinned=self._aliased)
        policy = BatchPolicy(settings.batch_max_size, settings.batch_max_wait_ms, settings.queue_max,
                             inline_max_ms=settings.batch_inline_max_ms)
        self.batchers = Batchers(policy, settings.batching, self.pool.runner)
        self._summaries: dict[Key, dict[str, Any]] = {}
        self.rollouts = RolloutControl(self)
        synced = registry if isinstance(registry, SyncedRegistry) else None
        self.store_poller = (StorePoller(synced.url, synced.mirror, settings.alias_poll_s, self._warm, metrics)
                             if synced is not None else None)
        self.heartbeat = Heartbeat(registry.root, settings.replica_id or default_replica_id(), settings.heartbeat_s,
                                   self.serving_aliases, publish=synced.mirror.publish if synced is not None else None)
        self.prediction_log = PredictionLog.from_settings(settings)
        self.readiness: dict[str, str] = {}
        self.readiness_backends: dict[str, str] = {}
        self.ready = False
        self._in_flight = 0  # requests inside `serve` now (event-loop thread only)
        self.closing = False  # set by `close`: a preload still running on its thread stops at the next task

    # ---- choosing -----------------------------------------------------------------------
    def kind_of(self, manifest: Manifest) -> ModelKind:
        return self.kinds[manifest.kind]  # the schema admits only known kinds

    def backend_for(self, task: str, manifest: Manifest) -> str:
        """settings' per-task choice > the manifest's `serving.backend` > the kind's default (CPU only)."""
        if task in self.settings.backends:
            return self.settings.backends[task]
        if manifest.serving.backend is not None:
            return manifest.serving.backend
        return self.kind_of(manifest).default_backend if self.device.type == "cpu" else "torch"

    def _warm(self, task: str, version: str) -> None:
        """Load a version an alias is about to name (the store's poller, before it moves the alias)."""
        try:
            self.cache.get((task, version))
        except Exception as exc:  # the request that needs it reports the error; the alias still moves
            log.error("cannot load %s/%s before serving it: %s", task, version, exc)

    def _aliased(self) -> set[Key]:
        return {(task, version) for task in self.registry.tasks() for version in self.resolver.aliases(task).values()}

    # ---- versions -----------------------------------------------------------------------
    async def acquire(self, task: str, ref: str = DEFAULT_ALIAS) -> LoadedModel:
        """The loaded version `ref` of `task`: from the cache, or loaded on an inference thread on first use."""
        key = (task, self.resolver.resolve(task, ref))
        return self.cache.peek(key) or await self.pool.run(self.cache.get, key)

    async def summary(self, model: LoadedModel) -> dict[str, Any]:
        """`model`'s layer-by-layer summary, computed once per version."""
        key = (model.task, model.version)
        if key not in self._summaries:
            example = example_input(model.preprocessing)
            self._summaries[key] = await self.pool.run(layer_summary, model.network, example, task=model.task)
        return self._summaries[key]

    # ---- the request pipeline -------------------------------------------------------------
    async def predict(self, task: str, request: RawRequest) -> BaseModel:
        """Answer one prediction request for `task`. Raises `ApiError` or domain errors (mapped in app.errors)."""
        return await self.serve(task, request.params.version, lambda kind, model: kind.decode_request(model, request),
                                _kind_response)

    async def serve(self, task: str, ref: str, decode: Callable[[ModelKind, LoadedModel], Decoded],
                    encode: Callable[[ModelKind, LoadedModel, Decoded, list[Any]], R]) -> R:
        """The pipeline of every prediction route, whatever the request looks like on the wire: the kind's own
        body (`predict`) or Open Inference Protocol tensors (`app.v2`). Acquire version `ref` of `task` (or,
        for an alias with a canary, the canary's share: `app.serving.rollouts`), `decode(kind, model)` the
        request into the kind's batch items, run them through the micro-batcher, `encode(kind, model,
        decoded, outcomes)` the answer, count it; then hand a shadow its share and log a sample."""
        started = time.perf_counter()
        self._in_flight += 1
        try:
            return await self._serve(task, ref, decode, encode, started)
        finally:
            self._in_flight -= 1

    async def _serve(self, task: str, ref: str, decode: Callable[[ModelKind, LoadedModel], Decoded],
                     encode: Callable[[ModelKind, LoadedModel, Decoded, list[Any]], R], started: float) -> R:
        alias = ref if ref in self.resolver.aliases(task) else None
        rollout = self.resolver.rollouts(task).get(alias) if alias is not None else None
        watch = self.rollouts.canary_watch(task, alias, rollout)
        try:
            model, kind, decoded, outcomes, alias = await self._predict(
                task, ref, watch.canary.version if watch else ref, decode, alias)
            response = encode(kind, model, decoded, outcomes)
        except Exception as exc:
            if watch is not None:
                self.rollouts.observe_canary(watch, time.perf_counter() - started, is_server_error(exc))
            raise
        latency = time.perf_counter() - started
        if watch is not None:
            self.rollouts.observe_canary(watch, latency, False)
        metrics, labels = self.metrics, (task, model.version, alias or "")
        metrics.child(metrics.predictions, *labels).inc(len(decoded.items))
        metrics.child(metrics.prediction_latency, *labels).observe(latency)
        if rollout is not None and rollout.shadow is not None and watch is None and alias == ref:
            self.rollouts.maybe_shadow(task, alias, rollout.shadow, decode, kind, model, decoded, outcomes)
        if self.prediction_log is not None and self.prediction_log.sampled():
            self._log_prediction(kind, model, alias, decoded, outcomes, latency)
        return response

    async def _predict(self, task: str, ref: str, served: str, decode: Callable[[ModelKind, LoadedModel], Decoded],
                       alias: str | None) -> tuple[LoadedModel, ModelKind, Decoded, list[Any], str | None]:
        """Version `served` (what `ref` routes to) decoded and run, and the alias that names it; a body that
        names its own version wins (and its alias, if it named one)."""
        model = await self.acquire(task, served)
        kind = self.kind_of(model.manifest)
        decoded = decode(kind, model)
        if decoded.version is not None and decoded.version != ref:
            model = await self.acquire(task, decoded.version)  # the body names the version (text kinds)
            if self.kind_of(model.manifest) is not kind:
                raise ApiError(409, "invalid_model", f"{task}/{model.version} is not a {kind.name} model")
            decoded = decode(kind, model)
            alias = decoded.version if decoded.version in self.resolver.aliases(task) else None
        return model, kind, decoded, await self._run_batched(model, kind, decoded, alias), alias

    def shadow_top1(self, task: str, version: str,
                    jobs: list[ShadowJob]) -> list[tuple[list[str | None], list[str | None]] | Exception]:
        """Blocking, on the shadow's thread: per served request (`jobs`), the served top-1 label per input and
        `version`'s, all the candidate's inputs in one `predict` call. Inputs come prepared from the served
        request when both versions preprocess alike, else decoded again; a request whose decode fails gets
        its exception."""
        model = self.cache.get((task, self.resolver.resolve(task, version)))
        kind = self.kind_of(model.manifest)
        results: list[tuple[list[str | None], list[str | None]] | Exception] = []
        runs: list[tuple[int, Decoded, list[str | None]]] = []
        for job in jobs:
            served_kind, served_model, served_decoded, served_outcomes = job.served
            served = [top[0][0] if top else None
                      for top in served_kind.top_predictions(served_model, served_decoded, served_outcomes, 1)]
            prepared = (kind.prepared(served_model, served_decoded, served_outcomes)
                        if served_model.preprocessing == model.preprocessing else None)
            try:
                runs.append((len(results), prepared or job.decode(kind, model), served))
                results.append(([], []))
            except Exception as exc:  # this request's input, not the others'
                results.append(exc)
        outcomes = kind.predict(model, [item for _, decoded, _ in runs for item in decoded.items], lambda _: True)
        start = 0
        for index, decoded, served in runs:
            part = outcomes[start:start + len(decoded.items)]
            start += len(decoded.items)
            results[index] = (served, [top[0][0] if top else None for top in kind.top_predictions(model, decoded, part, 1)])
        return results

    def _log_prediction(self, kind: ModelKind, model: LoadedModel, alias: str | None, decoded: Decoded,
                        outcomes: list[Any], latency: float) -> None:
        tops = kind.top_predictions(model, decoded, outcomes, PREDICTION_LOG_TOP_K)
        inputs = [{"sha256": kind.input_digest(item), "top": [{"label": label, "probability": p} for label, p in top]}
                  for item, top in zip(decoded.items, tops)]
        assert self.prediction_log is not None
        self.prediction_log.record(request_id=current_request_id.get(), task=model.task, version=model.version,
                                   alias=alias, latency_s=latency, inputs=inputs)

    async def _run_batched(self, model: LoadedModel, kind: ModelKind, decoded: Decoded,
                           alias: str | None = None) -> list[Any]:
        """Outcomes of `decoded`'s items through the version's micro-batcher: 503 when its queue is full, 504 past
        the deadline. Only a request alone in this process and with small inputs may run inline: the model's
        typical cost says nothing of one huge image, and a decode on the event loop stalls every connection."""
        batcher = self.batchers.get(model, partial(kind.predict, model),
                                    partial(self.metrics.batch_observer, model.task, model.version))
        alone = self._in_flight == 1 and decoded.input_bytes <= self.settings.batch_inline_max_bytes
        try:
            futures = batcher.submit(decoded.items, alone=alone)
        except QueueFullError as exc:
            self.metrics.rejected.labels(model.task, model.version, alias or "", "queue_full").inc()
            raise ApiError(503, "overloaded", f"{model.task} is at capacity ({exc}); retry shortly",
                           headers={"Retry-After": "1"}) from exc
        timeout = self.settings.request_timeout_s
        try:
            return await gather_with_timeout(futures, timeout)
        except asyncio.TimeoutError:
            self.metrics.rejected.labels(model.task, model.version, alias or "", "timeout").inc()
            raise ApiError(504, "timeout", f"inference did not finish within {timeout} s") from None

    # ---- lifecycle ------------------------------------------------------------------------
    def preload(self) -> None:
        """Load every task's production version (blocking); record per-task status for /readyz."""
        status: dict[str, str] = {}
        backends: dict[str, str] = {}
        ok = True
        self.registry.sweep_staging()
        for task in self.registry.tasks():
            if self.closing:  # a load cannot be cut short, but a closed server starts no more of them
                log.info("closing: preload stopped before %s", task)
                return
            if DEFAULT_ALIAS not in self.resolver.aliases(task):
                continue
            try:
                model = self.cache.get((task, self.resolver.resolve(task)))
                status[task], backends[task] = model.version, model.backend
            except Exception as exc:  # any failure is reported by /readyz, not fatal to the process
                log.error("cannot load %s/%s: %s", task, DEFAULT_ALIAS, exc)
                status[task] = f"error: {exc}"
                ok = False
        self.readiness, self.readiness_backends, self.ready = status, backends, ok

    def serving_aliases(self) -> dict[str, dict[str, str]]:
        """{task: {alias: version}} as this process resolves them now (what its heartbeat says)."""
        return {task: self.resolver.aliases(task) for task in self.registry.tasks()}

    async def close(self) -> None:
        self.closing = True
        await self.heartbeat.stop()
        if self.store_poller is not None:
            await self.store_poller.stop()
        await self.rollouts.close()
        await self.batchers.close()
        if self.prediction_log is not None:
            self.prediction_log.close()
        self.pool.close()
