"""Prometheus metrics (prometheus-client), one collector registry per app instance.

With several worker processes (`python -m app --workers N` sets PROMETHEUS_MULTIPROC_DIR), each
process writes its samples to files there and /metrics aggregates all live processes.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from app.batching import BatchObserver

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The service's metrics; `exposition` is the registry /metrics renders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.exposition = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            self.exposition = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.exposition)
        self.requests = Counter("modelhouse_http_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("modelhouse_http_request_duration_seconds", "HTTP request latency by route",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        # Per request: the version that answered and the alias the request named ("" when it named a version).
        self.predictions = Counter("modelhouse_predictions_total", "images or inputs predicted, per model version",
                                   ["task", "version", "alias"], registry=self.registry)
        self.prediction_latency = Histogram(
            "modelhouse_prediction_duration_seconds", "request latency of successful predictions, per model version",
            ["task", "version", "alias"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inference_latency = Histogram(
            "modelhouse_inference_duration_seconds", "decode + forward time of one micro-batch, per model version",
            ["task", "version"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("modelhouse_queue_depth", "items waiting for a micro-batch, per model version",
                                 ["task", "version"], registry=self.registry, multiprocess_mode="livesum")
        self.batch_size = Histogram("modelhouse_batch_size", "items per forward pass, per model version",
                                    ["task", "version"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
                                    registry=self.registry)
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        self.rejected = Counter("modelhouse_rejected_total", "requests shed (503 queue full, 504 timeout)",
                                ["task", "version", "alias", "reason"], registry=self.registry)
        self.canary_rollbacks = Counter("modelhouse_canary_rollbacks_total", "canaries ended by their own breach",
                                        ["task", "alias", "version"], registry=self.registry)
        self.shadow_inputs = Counter("modelhouse_shadow_inputs_total", "shadow inputs whose top-1 agreed with "
                                     "the served one or not", ["task", "alias", "version", "outcome"],
                                     registry=self.registry)
        self.shadow_failures = Counter("modelhouse_shadow_failures_total", "shadow requests that failed or were "
                                       "dropped (queue full)", ["task", "alias", "version", "reason"],
                                       registry=self.registry)
        # 1 while this process cannot reach its object store (it keeps serving what it has); per process
        self.store_degraded = Gauge("modelhouse_store_degraded", "1 while the object store cannot be reached",
                                    registry=self.registry, multiprocess_mode="max")

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once per label set: `labels()` takes a lock and checks its
        arguments on every call, on the path of every request. Label sets are bounded (route templates,
        statuses, registered versions)."""
        key = (metric._name, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def batch_observer(self, task: str, version: str) -> BatchObserver:
        """Feeds a model version's batcher events into the queue-depth, batch-size and latency metrics."""
        depth = self.queue_depth.labels(task, version)
        size = self.batch_size.labels(task, version)
        latency = self.inference_latency.labels(task, version)

        class Observer(BatchObserver):
            def queue_depth(self, value: int) -> None:
                depth.set(value)

            def batch_done(self, items: int, seconds: float) -> None:
                size.observe(items)
                latency.observe(seconds)

        return Observer()
