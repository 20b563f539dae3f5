"""`InferencePool`: the threads blocking work (decode, forward passes, loading) runs on, off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
SHARED = ""  # the pool of work that belongs to no task's requests (loading, summaries)


class InferencePool:
    """Dedicated thread pools (not the framework's shared one): inference never waits behind other work,
    and asyncio's run_in_executor is the cheapest hop off the event loop. Each task's requests run on a
    pool of their own of `workers` threads, so a slow task (ImageNet photos) cannot take the threads a
    fast one (digits) needs; the cores are shared as the OS schedules them. Pools are created on first
    use, so they belong to the process that serves."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executors: dict[str, ThreadPoolExecutor] = {}

    def _executor(self, task: str) -> ThreadPoolExecutor:
        executor = self._executors.get(task)
        if executor is None:
            name = f"inference-{task}" if task else "inference"
            executor = self._executors[task] = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=name)
        return executor

    async def run(self, func: Callable[..., T], *args: Any, task: str = SHARED) -> T:
        """Run blocking `func(*args)` on `task`'s pool (default: the shared one)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor(task), func, *args)

    def runner(self, task: str) -> Callable[..., Awaitable[Any]]:
        """`run` bound to `task`'s pool (what a task's micro-batchers run their batches with)."""
        executor = self._executor(task)

        async def run(func: Callable[..., T], *args: Any) -> T:
            return await asyncio.get_running_loop().run_in_executor(executor, func, *args)

        return run

    def close(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)
        self._executors.clear()
