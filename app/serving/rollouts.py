"""Canary splits on the request path: which version an alias's request goes to, and the canary's watch.

The split's state lives in the store (`<task>/rollouts.json`, written by `models.registry.rollouts`), so
every worker process and replica sharing the store applies the same split. Each process counts what
its own share of canary requests did (`CanaryWatch`) and ends the canary on its own, in the store,
when the candidate breaches a threshold over its `window` (automatic rollback, recorded in the history).
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fastapi.exceptions import RequestValidationError

from app.errors import ApiError, domain_status
from models.registry.rollouts import Canary

SPLIT_BUCKETS = 10_000  # the split's resolution: 0.01 %
MAX_CHECKS_PER_WINDOW = 100  # the p99 over the window is recomputed at most this often per window


def split_bucket(request_id: str) -> int:
    """A request id's bucket in [0, SPLIT_BUCKETS): the same id always lands in the same one, so a client
    that sends `X-Request-ID` gets a deterministic split; generated ids are unique, so theirs is random."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SPLIT_BUCKETS


def goes_to_canary(request_id: str, percent: float) -> bool:
    return split_bucket(request_id) < percent * (SPLIT_BUCKETS / 100)


def is_server_error(exc: BaseException) -> bool:
    """Whether `exc` is the service's failure (a 5xx: a crash, 503 overload, 504 timeout), not the client's."""
    if isinstance(exc, ApiError):
        return exc.status >= 500
    if isinstance(exc, RequestValidationError):
        return False
    mapped = domain_status(exc) if isinstance(exc, Exception) else None
    return mapped is None or mapped[0] >= 500


def p99(latencies_s: Any) -> float | None:
    """The 99th percentile (nearest rank) of `latencies_s` in milliseconds; None when empty."""
    ordered = sorted(latencies_s)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] * 1000


@dataclass
class CanaryWatch:
    """This process's count of one canary's requests: totals, and the last `window` of them."""

    task: str
    alias: str
    canary: Canary
    requests: int = 0
    errors: int = 0
    ended: bool = False  # this process stopped routing to it (a breach), before the store says so
    breach: str | None = None
    recent: deque[tuple[float, bool]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=self.canary.window)
        self._check_every = max(1, self.canary.window // MAX_CHECKS_PER_WINDOW)

    def observe(self, latency_s: float, failed: bool) -> str | None:
        """Count one canary request; the reason, once, when this observation makes the canary breach."""
        self.requests += 1
        self.errors += failed
        self.recent.append((latency_s, failed))
        if self.ended or len(self.recent) < self.canary.window or self.requests % self._check_every:
            return None
        error_rate = sum(f for _, f in self.recent) / len(self.recent)
        worst = p99(latency for latency, _ in self.recent) or 0.0
        if error_rate > self.canary.max_error_rate:
            self.breach = (f"error rate {error_rate:.3f} > {self.canary.max_error_rate} over the last "
                           f"{len(self.recent)} canary requests")
        elif worst > self.canary.max_p99_ms:
            self.breach = f"p99 {worst:.1f} ms > {self.canary.max_p99_ms} ms over the last {len(self.recent)} canary requests"
        else:
            return None
        self.ended = True
        return self.breach

    def stats(self) -> dict[str, Any]:
        recent_errors = sum(f for _, f in self.recent)
        return {"requests": self.requests, "errors": self.errors,
                "error_rate": round(recent_errors / len(self.recent), 6) if self.recent else None,
                "p99_ms": None if not self.recent else round(p99(latency for latency, _ in self.recent) or 0.0, 3),
                "window_filled": len(self.recent) >= self.canary.window, "breach": self.breach}


class CanaryWatches:
    """The watches of this process, one per canary (a new canary of the same alias starts from zero)."""

    def __init__(self) -> None:
        self._watches: dict[tuple[str, str], CanaryWatch] = {}

    def get(self, task: str, alias: str, canary: Canary) -> CanaryWatch:
        watch = self._watches.get((task, alias))
        if watch is None or watch.canary != canary:
            watch = self._watches[(task, alias)] = CanaryWatch(task, alias, canary)
        return watch

    def peek(self, task: str, alias: str, canary: Canary | None) -> CanaryWatch | None:
        watch = self._watches.get((task, alias))
        return watch if watch is not None and watch.canary == canary else None
