"""Shadow traffic: a share of an alias's requests also run on a candidate version, off the response path.

The served request only pays for putting its finished work on a bounded queue. One thread per process
takes what is queued, runs it on the candidate as one batch (from the served request's prepared inputs
when the candidate preprocesses the same way: no second decode), compares each input's top-1 with what
was served, and never answers anyone. The thread works at most `time_share` of the time: after each
batch it sleeps in proportion (a sleeping thread holds no GIL and no core; a low OS priority would not do,
since a descheduled thread that holds the GIL stalls the event loop). When that is not enough for the
traffic, the queue fills and the shadow drops work and counts it: the shadow falls behind, the served
traffic does not.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.serving.rollouts import p99
from models.registry.rollouts import Shadow

log = logging.getLogger(__name__)
LATENCY_SAMPLES = 1000  # the shadow's p99 is over its last this-many runs
STOP_TIMEOUT_S = 5.0


@dataclass
class ShadowStats:
    """This process's count of one shadow: runs, inputs compared with the served answer, and drops."""

    shadow: Shadow
    requests: int = 0
    compared: int = 0
    agreed: int = 0
    errors: int = 0
    drops: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "compared": self.compared,
                "agreement": round(self.agreed / self.compared, 6) if self.compared else None,
                "errors": self.errors, "drops": self.drops,
                "p99_ms": None if not self.latencies else round(p99(self.latencies) or 0.0, 3)}


@dataclass(frozen=True)
class ShadowJob:
    """One served request to repeat on the shadow: what was served (to compare with and, when the
    preprocessing matches, to take the prepared inputs from), and how to decode the request afresh."""

    task: str
    alias: str
    stats: ShadowStats
    decode: Callable[..., Any]
    served: tuple[Any, Any, Any, list[Any]]  # (kind, model, decoded, outcomes)


# (task, candidate version, jobs) -> per job, (served top-1, candidate top-1) per input, or its exception
ShadowPredict = Callable[[str, str, list[ShadowJob]], list[tuple[list[str | None], list[str | None]] | Exception]]


class ShadowRunner:
    """Runs shadow jobs on a low-priority thread with `predict`, at most `group_max` requests per call."""

    def __init__(self, predict: ShadowPredict, queue_max: int, group_max: int, time_share: float,
                 on_outcome: Callable[[ShadowJob, str, int], None]) -> None:
        self.predict, self.group_max, self.on_outcome = predict, group_max, on_outcome
        self.rest_per_work = 1.0 / time_share - 1.0  # seconds of sleep per second of work
        self._stats: dict[tuple[str, str], ShadowStats] = {}
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(queue_max)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def stats_for(self, task: str, alias: str, shadow: Shadow) -> ShadowStats:
        stats = self._stats.get((task, alias))
        if stats is None or stats.shadow != shadow:
            stats = self._stats[(task, alias)] = ShadowStats(shadow)
        return stats

    def peek(self, task: str, alias: str, shadow: Shadow | None) -> ShadowStats | None:
        stats = self._stats.get((task, alias))
        return stats if stats is not None and stats.shadow == shadow else None

    def full(self) -> bool:
        return self._queue.full()

    def drop(self, job: ShadowJob) -> None:
        job.stats.drops += 1
        self.on_outcome(job, "dropped", 1)

    def submit(self, job: ShadowJob) -> None:
        """Queue `job` without waiting; drop it (counted) when the queue is full."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, name="shadow", daemon=True)
                    self._thread.start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.drop(job)

    def _work(self) -> None:
        while True:
            jobs = [self._queue.get()]
            while len(jobs) < self._queue.maxsize:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in jobs
            groups: dict[tuple[str, str], list[ShadowJob]] = {}
            for job in jobs:
                if job is not None:
                    groups.setdefault((job.task, job.stats.shadow.version), []).append(job)
            for group in groups.values():
                for start in range(0, len(group), self.group_max):
                    began = time.perf_counter()
                    self._run(group[start:start + self.group_max])
                    time.sleep((time.perf_counter() - began) * self.rest_per_work)
            if stop:
                return

    def _run(self, jobs: list[ShadowJob]) -> None:
        started = time.perf_counter()
        first = jobs[0]
        try:
            results = self.predict(first.task, first.stats.shadow.version, jobs)
        except Exception as exc:  # the candidate's failure (gone, unloadable) is the shadow's finding only
            results = [exc] * len(jobs)
        elapsed = time.perf_counter() - started
        for job, result in zip(jobs, results):
            if isinstance(result, Exception):
                job.stats.errors += 1
                self.on_outcome(job, "error", 1)
                log.info("shadow %s/%s of %s failed: %s", job.task, job.stats.shadow.version, job.alias, result)
                continue
            served, candidate = result
            job.stats.latencies.append(elapsed)
            job.stats.requests += 1
            agreed = sum(1 for ours, theirs in zip(candidate, served) if ours == theirs and ours is not None)
            compared = min(len(candidate), len(served))
            job.stats.compared += compared
            job.stats.agreed += agreed
            self.on_outcome(job, "agree", agreed)
            self.on_outcome(job, "disagree", compared - agreed)

    def close(self) -> None:
        """Stop the thread after what is queued (or after `STOP_TIMEOUT_S`)."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=STOP_TIMEOUT_S)
        except queue.Full:
            pass
        self._thread.join(STOP_TIMEOUT_S)
        self._thread = None
