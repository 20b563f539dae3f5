"""An optional, sampled JSON-lines log of predictions, written off the request path.

`PredictionLog.record` only puts a tuple on a bounded queue; a background thread encodes each line and
writes it through a `logging.handlers.RotatingFileHandler`. A full queue (the disk is slower than the
traffic) drops the record and counts it in `dropped`; a failed write is counted in `failed`. Neither ever
blocks or fails a request.

Each worker process writes its own file: `<path>` with the process id inserted before the suffix
(`predictions.jsonl` -> `predictions.1234.jsonl`), because a `RotatingFileHandler` renames files when it
rotates and two processes rotating one file lose lines. Build the log in the process that writes (the app's
lifespan), not before a fork: the writer thread does not survive one. Backups are `<file>.1` ... `<file>.N`.

One line per sampled request:
`{"time": "2026-01-01T12:00:00.123Z", "request_id", "task", "version", "alias", "latency_ms", "inputs":
[{"sha256": hex, "top": [{"label", "probability"}, ...]}, ...]}`. `models.registry.drift` reads them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import random
import threading
import time
from datetime import datetime, timezone
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

log = logging.getLogger("app.prediction_log")

_STOP = object()  # the writer thread's sentinel
CLOSE_TIMEOUT_S = 10.0  # close() waits this long for the backlog; a stuck disk must not hang shutdown


def input_sha256(data: bytes | str) -> str:
    """Hex sha256 of one input (text as UTF-8): identifies an input in the log without storing it."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def process_path(path: Path, pid: int | None = None) -> Path:
    """`path` with the process id inserted before its suffix: the file this process writes."""
    return path.with_name(f"{path.stem}.{os.getpid() if pid is None else pid}{path.suffix}")


class _Handler(RotatingFileHandler):
    """A rotating file handler that counts failed writes and logs the first, instead of printing each."""

    failures = 0

    def handleError(self, record: logging.LogRecord) -> None:
        self.failures += 1
        if self.failures == 1:  # a full disk fails every write: one traceback is enough
            log.exception("prediction log: cannot write %s (further failures are only counted)", self.baseFilename)


class PredictionLog:
    """Sampled prediction records, appended as JSON lines to this process's file by a background thread.

    `sampled()` draws per request; `record()` never blocks: when `queue_max` records wait already it drops
    the new one and counts it in `dropped`. `close()` writes what is queued (waiting up to `CLOSE_TIMEOUT_S`)
    and stops the thread; later records are dropped. The caller must not mutate `inputs` after `record`.
    """

    def __init__(self, path: Path, *, sample_rate: float, max_bytes: int, backups: int,
                 queue_max: int = 10_000) -> None:
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if max_bytes <= 0 or backups < 1 or queue_max < 1:
            raise ValueError(f"max_bytes (got {max_bytes}), backups (got {backups}) and queue_max (got {queue_max}) "
                             "must be positive: without a backup a full file is never rotated")
        self.path = process_path(Path(path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sample_rate = sample_rate
        self.dropped = 0
        self._drop_lock = threading.Lock()  # record() may be called from several threads
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_max)
        # delay: the file appears with the first record, not at startup
        self._handler = _Handler(self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
        self._closed = False
        self._thread = threading.Thread(target=self._drain, name="prediction-log", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Any) -> PredictionLog | None:
        """The log the settings ask for (`prediction_log*`), or None when `prediction_log` is unset."""
        if settings.prediction_log is None:
            return None
        prediction_log = cls(settings.prediction_log, sample_rate=settings.prediction_log_sample_rate,
                             max_bytes=settings.prediction_log_max_bytes, backups=settings.prediction_log_backups)
        log.info("prediction log: %s, sample rate %s", prediction_log.path, prediction_log.sample_rate)
        return prediction_log

    @property
    def failed(self) -> int:
        """Records whose write failed (disk full, file removed, ...)."""
        return self._handler.failures

    def sampled(self) -> bool:
        """Whether this request is logged: true with probability `sample_rate` (module `random`)."""
        return random.random() < self.sample_rate

    def record(self, *, request_id: str, task: str, version: str, alias: str | None, latency_s: float,
               inputs: list[dict]) -> None:
        """Queue one request's line (encoded and written by the thread); drop and count it when the queue is full."""
        item = (time.time(), request_id, task, version, alias, latency_s, inputs)
        try:
            if self._closed:
                raise queue.Full
            self._queue.put_nowait(item)
        except queue.Full:
            with self._drop_lock:
                self.dropped += 1

    def close(self) -> None:
        """Write the queued records and stop the thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(_STOP, timeout=CLOSE_TIMEOUT_S)
        except queue.Full:
            pass
        self._thread.join(CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("prediction log: %s not flushed within %s s; %d records left unwritten", self.path,
                        CLOSE_TIMEOUT_S, self._queue.qsize())
            return  # the thread still holds the file: closing it under the thread would fail its write
        self._handler.close()
        if self.dropped or self.failed:
            log.warning("prediction log: %d records dropped (queue full), %d failed writes", self.dropped, self.failed)

    def _drain(self) -> None:
        """The writer thread: encode and write queued records until the sentinel."""
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                line = encode_line(*item)
            except (TypeError, ValueError):  # inputs that JSON cannot hold: a caller's bug, not worth a request
                self._handler.failures += 1
                log.exception("prediction log: cannot encode a record of %s/%s", item[2], item[3])
                continue
            self._handler.handle(logging.makeLogRecord({"msg": line}))


def encode_line(created: float, request_id: str, task: str, version: str, alias: str | None, latency_s: float,
                inputs: list[dict]) -> str:
    """One log line (without its newline), keys in the documented order."""
    stamp = datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"time": stamp, "request_id": request_id, "task": task, "version": version, "alias": alias,
                       "latency_ms": round(latency_s * 1000, 3), "inputs": inputs}, separators=(",", ":"))
