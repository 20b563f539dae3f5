"""The fast lane: pure-ASGI handling of the image-classification POSTs, in front of FastAPI.

FastAPI's request machinery (its middleware stack of error, telemetry and body-limit layers,
routing, dependency injection, response validation) costs more CPU than decoding a small image
and its share of a batched forward pass. `ServiceApp` (app/main.py) hands the POSTs of
`CLASSIFY_ROUTES` to `FastLane.serve` before any of that runs: it reads the body itself
(size-limited), validates the query parameters against the same route table, calls the same
`classify` core as the FastAPI routes and writes the JSON. Everything else, and these routes'
OpenAPI docs, stay with FastAPI (`MODELHOUSE_FAST_LANE=false` routes them there too).
"""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from app.errors import ApiError, domain_status, error_body
from app.metrics import Metrics
from app.model_service import ModelService
from app.routes.classify import CLASSIFY_ROUTES, ClassifyRoute, classify
from app.settings import Settings
from models.registry import RegistryError

log = logging.getLogger(__name__)
JSON_HEADERS = [(b"content-type", b"application/json")]
TRUTHY, FALSY = {"1", "true", "yes", "on", "t", "y"}, {"0", "false", "no", "off", "f", "n"}  # as pydantic reads bools


class FastLane:
    """Answers POSTs to the classification routes without FastAPI."""

    def __init__(self, settings: Settings, service: ModelService, metrics: Metrics) -> None:
        self.settings, self.service, self.metrics = settings, service, metrics

    @staticmethod
    def route_for(scope: Scope) -> ClassifyRoute | None:
        """The classification route `scope` is a POST to, if any."""
        if scope["type"] == "http" and scope["method"] == "POST":
            return CLASSIFY_ROUTES.get(scope["path"])
        return None

    async def serve(self, route: ClassifyRoute, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request to `route` (never raises: every failure is a JSON error response)."""
        started = time.perf_counter()
        status, body, headers = await self._answer(route, scope, receive)
        await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS + headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.requests.labels("POST", scope["path"], str(status)).inc()
        self.metrics.latency.labels("POST", scope["path"]).observe(time.perf_counter() - started)

    async def _answer(self, route: ClassifyRoute, scope: Scope, receive: Receive) -> tuple[int, bytes, list]:
        try:
            top_k, version, debug = parse_params(scope.get("query_string", b""), route)
            body = await read_body(scope, receive, self.settings.max_request_bytes)
            content_type = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"), None)
            result = await classify(route.task, body, content_type, top_k, version, self.settings, self.service,
                                    self.metrics, debug=debug)
            return 200, result.model_dump_json().encode(), []
        except ApiError as exc:
            headers = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
            return exc.status, _json(error_body(exc.code, exc.message)), headers
        except (RegistryError, ValueError) as exc:
            mapped = domain_status(exc)
            if mapped is None:
                log.exception("unexpected error on POST %s", scope["path"])
                return 500, _json(error_body("internal_error", "internal server error")), []
            return mapped[0], _json(error_body(mapped[1], str(exc))), []
        except Exception:  # never let one request take the server down
            log.exception("unexpected error on POST %s", scope["path"])
            return 500, _json(error_body("internal_error", "internal server error")), []


def parse_params(query_string: bytes, route: ClassifyRoute) -> tuple[int, str, bool]:
    """`top_k`, `version` and `debug` from the query, validated like the FastAPI route's Query() rules (422)."""
    params = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
    raw_top_k = params.get("top_k", [str(route.default_top_k)])[-1]
    try:
        top_k = int(raw_top_k)
    except ValueError:
        raise ApiError(422, "invalid_parameters", f"top_k: Input should be a valid integer, got {raw_top_k!r}") from None
    if not 1 <= top_k <= route.max_top_k:
        raise ApiError(422, "invalid_parameters", f"top_k: must be between 1 and {route.max_top_k}, got {top_k}")
    version = params.get("version", ["production"])[-1]
    if not 1 <= len(version) <= 80:
        raise ApiError(422, "invalid_parameters", "version: must be 1 to 80 characters")
    raw_debug = params.get("debug", ["false"])[-1].lower()
    if raw_debug not in TRUTHY | FALSY:
        raise ApiError(422, "invalid_parameters", f"debug: Input should be a valid boolean, got {raw_debug!r}")
    return top_k, version, raw_debug in TRUTHY


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body; 413 as soon as the declared or received size passes `limit` bytes."""
    declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"request body is {int(declared)} bytes; the limit is {limit}")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "client_disconnected", "the client closed the connection before the body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _json(payload: object) -> bytes:
    return json.dumps(payload).encode()
