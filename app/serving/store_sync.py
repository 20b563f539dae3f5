"""`StorePoller`: keeps this process's mirror of an object store current, and says when it cannot.

Every `interval_s` (MODELHOUSE_ALIAS_POLL_S) it runs `StoreMirror.sync` on a thread of its own (a download
never holds an inference thread): new versions are copied and verified, each version an alias moves to is
loaded (`warm`) before the alias moves, so the first request after a promotion does not pay for the load.
While the store cannot be reached the process keeps serving what it has, reports `degraded` (in /readyz and
`modelhouse_store_degraded`), and retries with a doubling delay up to `MAX_BACKOFF_S`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from app.metrics import Metrics
from models.registry.mirror import StoreMirror, Warm

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 10.0


@dataclass
class StoreState:
    """What `/readyz` and `GET /models/{task}` say about the store."""

    url: str
    degraded: bool = False
    error: str | None = None
    last_sync_unix: float | None = None
    failures: int = 0
    refused: dict[str, dict[str, str]] = field(default_factory=dict)


class StorePoller:
    def __init__(self, url: str, mirror: StoreMirror, interval_s: float, warm: Warm, metrics: Metrics) -> None:
        self.mirror, self.interval_s, self.warm, self.metrics = mirror, interval_s, warm, metrics
        self.state = StoreState(url=url, refused=mirror.refused)
        self._task: asyncio.Task[None] | None = None

    def sync_now(self, warm: bool = True) -> bool:
        """One sync (blocking), loading what aliases move to first unless not `warm`; True when it reached
        the store. Records the outcome in `state`."""
        try:
            moves = self.mirror.sync(self.warm if warm else None)
        except Exception as exc:  # the store gone, slow or refusing: keep serving what the mirror has
            self.state.failures += 1
            if not self.state.degraded:
                log.error("store %s unreachable; serving what this replica has: %s", self.state.url, exc)
            self.state.degraded, self.state.error = True, str(exc)
            self.metrics.store_degraded.set(1)
            return False
        if self.state.degraded:
            log.warning("store %s reachable again after %d failed polls", self.state.url, self.state.failures)
        for task, alias, version in moves:
            log.info("store %s: %s/%s now serves %s", self.state.url, task, alias, version)
        self.state.degraded, self.state.error, self.state.failures = False, None, 0
        self.state.last_sync_unix = time.time()
        self.metrics.store_degraded.set(0)
        return True

    def delay(self) -> float:
        """The wait before the next poll: the interval, doubled per failed poll up to `MAX_BACKOFF_S`."""
        if not self.state.failures:
            return self.interval_s
        return min(max(MAX_BACKOFF_S, self.interval_s), self.interval_s * 2 ** self.state.failures)

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.delay())
                await asyncio.to_thread(self.sync_now)

        self._task = asyncio.get_running_loop().create_task(loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
