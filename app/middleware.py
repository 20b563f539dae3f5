"""`RequestMiddleware`: what every request gets, whichever route answers it: a request id (set for the
logs, echoed as `X-Request-ID`) and the request metrics (count and latency by route template).

One pure-ASGI layer with one send wrapper: it runs around every request, so each layer and wrapper
is paid for by the cheapest prediction too (bench.ab measures it).
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import Metrics
from app.request_ids import HEADER, current_request_id, request_id_of


class RequestMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500
        request_id = request_id_of(scope)
        token = current_request_id.set(request_id)
        id_header = (HEADER, request_id.encode("ascii"))

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            current_request_id.reset(token)
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.child(self.metrics.requests, method, route, str(status)).inc()
            self.metrics.child(self.metrics.latency, method, route).observe(time.perf_counter() - start)
