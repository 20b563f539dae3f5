"""`InferencePool`: the threads blocking work (decode, forward passes, loading) runs on, off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class InferencePool:
    """A dedicated pool (not the framework's shared one): inference never waits behind other work, and
    asyncio's run_in_executor is the cheapest hop off the event loop. Created on first use, so the pool
    belongs to the process that serves (after any fork)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run blocking `func(*args)` in a pool thread, at most `workers` at a time."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="inference")
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
