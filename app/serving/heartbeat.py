"""Heartbeats: every worker process says, in the store, which version it serves per task and alias.

Each process writes `<store>/_replicas/<replica id>.json` every `heartbeat_s` seconds (atomic replace):
its id, host, pid, start and write times, and per task the aliases as this process resolves them (its
own view of the store: on a network volume that caches attributes, it can lag the store). `GET
/models/{task}` reads them all and says whether the fresh ones agree with the store: after a promotion
through any replica, that is where to watch the others converge. A process that stops removes its file;
one that died leaves it, shown as stale after `STALE_AFTER_BEATS` missed beats and removed after
`FORGET_AFTER_BEATS`. With an object store, each beat is also written there (`publish`), and the
store's poller copies everyone's into the local mirror that `replicas` reads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Callable
from typing import Any

from models.registry.manifest import write_json_atomic

log = logging.getLogger(__name__)
REPLICAS_DIR = "_replicas"  # not a task: it holds no versions
STALE_AFTER_BEATS = 3
FORGET_AFTER_BEATS = 60


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def utc_stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


class Heartbeat:
    """Writes this process's heartbeat; reads everyone's. `serving()` gives {task: {alias: version}}."""

    def __init__(self, root: Path, replica_id: str, interval_s: float, serving: Any,
                 publish: Callable[[str, bytes | None], None] | None = None) -> None:
        self.directory, self.replica_id, self.interval_s, self.serving = root / REPLICAS_DIR, replica_id, interval_s, serving
        self.publish = publish
        self.started = time.time()
        self._task: asyncio.Task[None] | None = None

    @property
    def path(self) -> Path:
        return self.directory / f"{self.replica_id}.json"

    def beat(self) -> None:
        """Write the heartbeat now (blocking: file I/O)."""
        now = time.time()
        record = {"replica": self.replica_id, "host": socket.gethostname(), "pid": os.getpid(),
                  "started_at": utc_stamp(self.started), "time": utc_stamp(now), "unix_time": now,
                  "serving": self.serving()}
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, record)
        if self.publish is not None:
            self.publish(f"{REPLICAS_DIR}/{self.path.name}", json.dumps(record).encode())

    def replicas(self) -> list[dict[str, Any]]:
        """Every heartbeat in the store with its age and staleness; files of long-dead processes removed."""
        now, found = time.time(), []
        try:
            paths = sorted(self.directory.glob("*.json"))
        except OSError:
            return []
        for path in paths:
            try:
                record = json.loads(path.read_text())
                age = now - float(record["unix_time"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # half-written by an old version, or removed meanwhile
            if age > FORGET_AFTER_BEATS * self.interval_s:
                try:
                    path.unlink(missing_ok=True)
                    if self.publish is not None:  # an object store's copy, or the next sync brings it back
                        self.publish(f"{REPLICAS_DIR}/{path.name}", None)
                except Exception:  # a read-only or unreachable store: not listed all the same
                    pass
                continue
            found.append({**record, "age_s": round(age, 3), "stale": age > STALE_AFTER_BEATS * self.interval_s})
        return found

    def start(self, run_blocking: Any) -> None:
        """Beat every `interval_s` on the event loop's behalf, the I/O through `run_blocking`."""
        async def loop() -> None:
            failing = False
            while True:
                try:
                    await run_blocking(self.beat)
                    if failing:
                        log.warning("heartbeat to %s works again", self.path)
                    failing = False
                except Exception as exc:  # a store gone or read-only: keep serving; say so once, not every beat
                    if not failing:
                        log.warning("heartbeat to %s failed (this process is not listed there until it "
                                    "works): %s", self.path, exc)
                    failing = True
                await asyncio.sleep(self.interval_s)

        self._task = asyncio.get_running_loop().create_task(loop())

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        try:
            self.path.unlink(missing_ok=True)
            if self.publish is not None:
                self.publish(f"{REPLICAS_DIR}/{self.path.name}", None)
        except Exception:  # never written (a read-only store), or the store is gone
            pass
