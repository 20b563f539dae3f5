"""Shadow traffic: a share of an alias's requests also run on a candidate version, off the response path.

The served request only pays for putting a job on a bounded queue; one background task per process
runs the jobs one at a time (so the candidate takes at most one request's worth of the task's
inference threads), compares its top-1 with what was served, and never answers anyone. When the queue
is full the job is dropped and counted: the shadow falls behind, the served traffic does not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from app.serving.rollouts import p99
from models.registry.rollouts import Shadow

log = logging.getLogger(__name__)
LATENCY_SAMPLES = 1000  # the shadow's p99 is over its last this-many runs


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
    """One served request to repeat on the shadow: how to decode it, and the top-1 label it was served."""

    task: str
    alias: str
    stats: ShadowStats
    decode: Callable[..., Any]
    served_top1: list[str | None]


ShadowPredict = Callable[[str, str, Callable[..., Any]], Awaitable[list[str | None]]]


class ShadowRunner:
    """Runs shadow jobs with `predict(task, version, decode)` (the candidate's top-1 label per input)."""

    def __init__(self, predict: ShadowPredict, queue_max: int, on_outcome: Callable[[ShadowJob, str, int], None]) -> None:
        self.predict, self.queue_max, self.on_outcome = predict, queue_max, on_outcome
        self._stats: dict[tuple[str, str], ShadowStats] = {}
        self._queue: asyncio.Queue[ShadowJob] | None = None
        self._worker: asyncio.Task[None] | None = None

    def stats_for(self, task: str, alias: str, shadow: Shadow) -> ShadowStats:
        stats = self._stats.get((task, alias))
        if stats is None or stats.shadow != shadow:
            stats = self._stats[(task, alias)] = ShadowStats(shadow)
        return stats

    def peek(self, task: str, alias: str, shadow: Shadow | None) -> ShadowStats | None:
        stats = self._stats.get((task, alias))
        return stats if stats is not None and stats.shadow == shadow else None

    def submit(self, job: ShadowJob) -> None:
        """Queue `job` without waiting; drop it (counted) when the queue is full."""
        if self._queue is None:
            self._queue = asyncio.Queue(self.queue_max)
            self._worker = asyncio.get_running_loop().create_task(self._work(self._queue))
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            job.stats.drops += 1
            self.on_outcome(job, "dropped", 1)

    async def _work(self, queue: asyncio.Queue[ShadowJob]) -> None:
        while True:
            job = await queue.get()
            await self._run(job)

    async def _run(self, job: ShadowJob) -> None:
        started = time.perf_counter()
        try:
            labels = await self.predict(job.task, job.stats.shadow.version, job.decode)
        except Exception as exc:  # the candidate's failure is the shadow's finding, never the client's
            job.stats.errors += 1
            self.on_outcome(job, "error", 1)
            log.info("shadow %s/%s of %s failed: %s", job.task, job.stats.shadow.version, job.alias, exc)
            return
        job.stats.latencies.append(time.perf_counter() - started)
        job.stats.requests += 1
        agreed = sum(1 for ours, theirs in zip(labels, job.served_top1) if ours == theirs and ours is not None)
        compared = min(len(labels), len(job.served_top1))
        job.stats.compared += compared
        job.stats.agreed += agreed
        self.on_outcome(job, "agree", agreed)
        self.on_outcome(job, "disagree", compared - agreed)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
            self._worker, self._queue = None, None
