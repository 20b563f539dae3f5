"""Micro-batching: concurrent requests for one model version run as one forward pass.

Each served (task, version) gets a `MicroBatcher`: requests put items in a bounded queue
and await futures; one runner coroutine takes whatever is queued (up to `max_batch_size`),
optionally waits up to `max_wait_ms` for more while the batch is small, and hands the batch
to a worker thread. While a batch runs, new arrivals queue up and form the next batch, so
batches grow with load and a lone request is never held back by more than `max_wait_ms`
(0 by default: it runs at once). `concurrency` > 1 lets several batches run at once (for big
models whose forward pass does not get cheaper per item with batch size on a CPU, two
single-threaded batches on two cores beat one). A full queue raises `QueueFullError` at once (-> 503).

With `inline_max_ms` > 0, a request that is alone (the only one its process is serving, as its caller
says), that finds its batcher idle (nothing queued, no batch running), and whose items the model has
been running in less than that (a moving average per item, measured on the
inference threads first) runs at once on the event loop: for a model that takes tens of microseconds,
the hops to the inference thread and back cost more CPU and latency than the forward pass itself. Under
load, other requests are in flight, so the work stays on the threads, overlapping the event loop's HTTP
work, and arrivals queue and batch as before. Never with `max_wait_ms` > 0 (that
asks batches to grow), and work run inline is not cut by the request timeout (it is shorter than the hop).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# Blocking: one outcome (result or exception) per item. `alive(i)` is False once item i's request has been
# answered (504) or has gone: its work is skipped.
BatchFn = Callable[[list[Any], Callable[[int], bool]], list[Any]]


@dataclass(frozen=True)
class BatchPolicy:
    """How one model's requests are batched and bounded."""

    max_batch_size: int = 64
    max_wait_ms: float = 0.0
    max_queue: int = 64
    concurrency: int = 1  # batches in flight at once (each on its own inference thread)
    inline_max_ms: float = 0.0  # run an idle batcher's request on the event loop when it costs less (0: never)

    def merged(self, overrides: dict[str, Any] | None) -> BatchPolicy:
        """This policy with the keys of `overrides` (e.g. a manifest's "serving" block) replaced."""
        if not overrides:
            return self
        known = {k: overrides[k] for k in POLICY_KEYS if k in overrides}
        merged = {**self.__dict__, **known}
        return BatchPolicy(int(merged["max_batch_size"]), float(merged["max_wait_ms"]), int(merged["max_queue"]),
                           int(merged["concurrency"]), float(merged["inline_max_ms"]))


POLICY_KEYS = ("max_batch_size", "max_wait_ms", "max_queue", "concurrency", "inline_max_ms")
ITEM_COST_SMOOTHING = 0.1  # weight of the newest batch in the moving average of the cost per item


class QueueFullError(Exception):
    """The model's queue is at `max_queue` items; the caller should answer 503 with Retry-After."""


class BatchObserver:
    """Hooks for metrics; the default does nothing."""

    def queue_depth(self, depth: int) -> None: ...

    def batch_done(self, size: int, seconds: float) -> None: ...


@dataclass
class _Item:
    payload: Any
    future: asyncio.Future[Any]


class MicroBatcher:
    """Batches items for one model; `run_blocking(fn, items)` runs a batch off the event loop."""

    def __init__(self, process: BatchFn, policy: BatchPolicy,
                 run_blocking: Callable[..., Awaitable[list[Any]]],
                 observer: BatchObserver | None = None) -> None:
        self.process, self.policy, self.run_blocking = process, policy, run_blocking
        self.observer = observer or BatchObserver()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._queue: collections.deque[_Item] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._running = 0  # batches on the inference threads now
        self.item_seconds: float | None = None  # moving average of the forward pass's cost per item

    def submit(self, payloads: Sequence[Any], *, alone: bool = True) -> list[asyncio.Future[Any]]:
        """Queue `payloads` (all or none) and return one future per payload. `alone`: the caller's request
        is the only one its process is serving, so running it inline (see above) keeps no other waiting."""
        if len(self._queue) + len(payloads) > self.policy.max_queue:
            raise QueueFullError(f"queue full ({len(self._queue)} waiting, limit {self.policy.max_queue})")
        loop = asyncio.get_running_loop()
        if alone and self._runs_inline(len(payloads)):
            return self._run_inline(payloads, loop)
        self._start(loop)
        items = [_Item(payload, loop.create_future()) for payload in payloads]
        self._queue.extend(items)
        self.observer.queue_depth(len(self._queue))
        assert self._arrived is not None
        self._arrived.set()
        return [item.future for item in items]

    def _runs_inline(self, count: int) -> bool:
        cost = self.item_seconds
        return (cost is not None and not self._queue and not self._running and self.policy.max_wait_ms <= 0
                and cost * count * 1000 <= self.policy.inline_max_ms)

    def _run_inline(self, payloads: Sequence[Any], loop: asyncio.AbstractEventLoop) -> list[asyncio.Future[Any]]:
        outcomes = self._timed(list(payloads), lambda _: True)
        futures = [loop.create_future() for _ in payloads]
        for future, outcome in zip(futures, outcomes):
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        return futures

    def _timed(self, payloads: list[Any], alive: Callable[[int], bool]) -> list[Any]:
        """`process(payloads, alive)`, its cost per item folded into `item_seconds`, a failure of the whole
        batch (a bug in `process`) turned into one exception per item; called on any thread."""
        started = time.perf_counter()
        try:
            outcomes = self.process(payloads, alive)
        except Exception as exc:  # fail this batch's requests, keep serving
            log.exception("batch of %d failed", len(payloads))
            return [exc] * len(payloads)
        seconds = time.perf_counter() - started
        per_item = seconds / max(len(payloads), 1)
        previous = self.item_seconds  # a stale read from another thread only shifts the average a little
        self.item_seconds = per_item if previous is None else previous + ITEM_COST_SMOOTHING * (per_item - previous)
        self.observer.batch_done(len(payloads), seconds)
        return outcomes

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is loop and self._runner is not None and not self._runner.done():
            return
        self.loop, self._arrived = loop, asyncio.Event()
        self._runner = loop.create_task(self._run(), name="micro-batcher")

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for item in self._queue:
            if not item.future.done():
                item.future.cancel()
        self._queue.clear()

    async def _run(self) -> None:
        assert self._arrived is not None
        slots = asyncio.Semaphore(self.policy.concurrency)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self._arrived.wait()
                self._arrived.clear()
                while self._queue:
                    await slots.acquire()  # while every slot is busy, arrivals keep queueing into a bigger batch
                    await self._gather_more()
                    batch = self._take_batch()
                    if not batch:
                        slots.release()
                        continue
                    task = asyncio.create_task(self._execute(batch))
                    running.add(task)
                    task.add_done_callback(lambda t: (running.discard(t), slots.release()))
        finally:
            for task in running:
                task.cancel()

    async def _gather_more(self) -> None:
        """While the batch is small, wait up to `max_wait_ms` for more arrivals."""
        if self.policy.max_wait_ms <= 0 or len(self._queue) >= self.policy.max_batch_size:
            return
        assert self._arrived is not None
        deadline = time.perf_counter() + self.policy.max_wait_ms / 1000
        while len(self._queue) < self.policy.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        while self._queue and len(batch) < self.policy.max_batch_size:
            item = self._queue.popleft()
            if not item.future.done():  # skip items whose request timed out or went away
                batch.append(item)
        self.observer.queue_depth(len(self._queue))
        return batch

    async def _execute(self, batch: list[_Item]) -> None:
        def alive(index: int) -> bool:  # read from the inference thread: a stale answer only costs one item
            return not batch[index].future.done()

        self._running += 1
        try:
            outcomes = await self.run_blocking(self._timed, [item.payload for item in batch], alive)
        except Exception as exc:  # the runner itself failed (its pool shut down)
            outcomes = [exc] * len(batch)
        finally:
            self._running -= 1
        for item, outcome in zip(batch, outcomes):
            if item.future.done():
                continue
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)


async def gather_with_timeout(futures: list[asyncio.Future[Any]], timeout: float) -> list[Any]:
    """Results of `futures` (exceptions returned, not raised); cancels them all on timeout."""
    if all(future.done() for future in futures):  # run inline: no need to wait
        return [future.exception() or future.result() for future in futures]
    try:
        return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), timeout)
    except asyncio.TimeoutError:
        for future in futures:
            future.cancel()
        raise
