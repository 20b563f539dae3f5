"""The Open Inference Protocol v2 REST routes (KServe's and Triton's HTTP API) for every registered task.

    GET  /v2                                               server metadata (name, version, extensions)
    GET  /v2/health/live | /v2/health/ready                200, or 503 while the models load (empty body)
    GET  /v2/models/{model}[/versions/{version}]           model metadata: platform, versions, inputs, outputs
    GET  /v2/models/{model}[/versions/{version}]/ready     200 once that version is loaded, else 503
    POST /v2/models/{model}[/versions/{version}]/infer     inference (`app.v2.tensors`, `app.v2.kinds`)

`{model}` is a task; `{version}` a version id (or an alias); without one, the `production` alias.
`V2Routes` is dispatched like the prediction routes (`app.main.ServiceApp`): inside the service's
middleware (request ids, metrics, whatever `add_middleware` adds), before FastAPI's own layers. An infer
request takes `ModelServer.serve`, the pipeline of every prediction route (micro-batching, queue bound,
deadline, metrics). Every failure, any path under /v2 included, is answered by
`app.errors.oip_error_response`: the service's status with the protocol's `{"error": "message"}`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from starlette.types import Receive, Scope, Send

from app.errors import ApiError, oip_error_response
from app.kinds import Decoded, ModelKind
from app.uploads import header, read_body
from app.v2.kinds import adapter_for
from app.v2.tensors import HEADER_LENGTH, JSON_CONTENT, InferRequest, InferResponse, encode_infer_response, \
    parse_infer_request
from models.registry import DEFAULT_ALIAS, Manifest
from models.runtime import LoadedModel

EXTENSIONS = ["binary_tensor_data", "classification"]
PLATFORMS = {"torch": "pytorch", "onnxruntime": "onnxruntime_onnx"}  # backend -> the protocol's platform name
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, body
Handler = Callable[[Scope, Receive], Awaitable[Answer]]


@dataclass(frozen=True)
class V2Route:
    """One route: its template (`path`, the metrics' route label; None for paths no route has), method and handler."""

    path: str | None
    method: str
    handler: Handler


def _json(document: dict[str, Any]) -> Answer:
    return 200, JSON_CONTENT, json.dumps(document, separators=(",", ":")).encode()


def _model_ref(scope: Scope) -> tuple[str, str]:
    params = scope["path_params"]
    return params["model"], params.get("version", DEFAULT_ALIAS)


async def server_metadata(scope: Scope, receive: Receive) -> Answer:
    app = scope["app"]
    return _json({"name": app.title, "version": app.version, "extensions": EXTENSIONS})


async def live(scope: Scope, receive: Receive) -> Answer:
    return 200, [], b""


async def ready(scope: Scope, receive: Receive) -> Answer:
    return (200 if scope["app"].state.server.ready else 503), [], b""


def _known(scope: Scope) -> tuple[Any, str, str, LoadedModel | None]:
    """(server, task, version id, the loaded model or None); the registry's errors (404) for unknown names."""
    server = scope["app"].state.server
    task, ref = _model_ref(scope)
    version = server.resolver.resolve(task, ref)
    return server, task, version, server.cache.peek((task, version))


async def model_metadata(scope: Scope, receive: Receive) -> Answer:
    server, task, version, model = _known(scope)
    manifest: Manifest = model.manifest if model is not None else server.registry.manifest(task, version)
    backend = model.backend if model is not None else server.backend_for(task, manifest)
    adapter = adapter_for(manifest.kind)
    return _json({"name": task, "versions": server.registry.versions(task), "platform": PLATFORMS.get(backend, backend),
                  "inputs": [spec.metadata() for spec in adapter.inputs(manifest)],
                  "outputs": [spec.metadata() for spec in adapter.outputs(manifest)]})


async def model_ready(scope: Scope, receive: Receive) -> Answer:
    model = _known(scope)[3]
    return (200 if model is not None else 503), [], b""


def _decode(request: InferRequest, kind: ModelKind, model: LoadedModel) -> Decoded:
    return adapter_for(kind.name).decode(kind, model, request)


def _encode(request: InferRequest, kind: ModelKind, model: LoadedModel, decoded: Decoded,
            outcomes: list[Any]) -> InferResponse:
    return InferResponse(model.task, model.version, request.id, adapter_for(kind.name).encode(model, decoded, outcomes))


async def infer(scope: Scope, receive: Receive) -> Answer:
    server = scope["app"].state.server
    task, ref = _model_ref(scope)
    encoding = header(scope, b"content-encoding")
    if encoding is not None and encoding.strip().lower() != "identity":
        raise ApiError(415, "unsupported_media_type", f"Content-Encoding {encoding!r}: send the request uncompressed")
    settings = server.settings
    body = await read_body(scope, receive, settings.max_request_bytes, settings.body_timeout_s)
    request = parse_infer_request(body, header(scope, HEADER_LENGTH))
    response = await server.serve(task, ref, partial(_decode, request), partial(_encode, request))
    headers, payload = encode_infer_response(response)
    return 200, headers, payload


async def _not_found(scope: Scope, receive: Receive) -> Answer:
    raise ApiError(404, "not_found", f"no Open Inference Protocol route {scope['path']}")


NOT_FOUND = V2Route(None, "*", _not_found)
MODEL = "/v2/models/{model}"
VERSION = "/v2/models/{model}/versions/{version}"
ROUTES = [V2Route("/v2", "GET", server_metadata), V2Route("/v2/health/live", "GET", live),
          V2Route("/v2/health/ready", "GET", ready),
          *(route for base in (MODEL, VERSION) for route in (
              V2Route(base, "GET", model_metadata), V2Route(f"{base}/ready", "GET", model_ready),
              V2Route(f"{base}/infer", "POST", infer)))]


class V2Routes:
    """Matches the paths under /v2 and answers them (`serve`)."""

    def __init__(self) -> None:
        self._by_template = {route.path: route for route in ROUTES}

    def _template(self, path: str) -> tuple[str | None, dict[str, str]]:
        parts = path.split("/")[2:]  # after "" and "v2"
        if not parts:
            return "/v2", {}
        if parts[0] != "models":
            return "/v2/" + "/".join(parts), {}  # health, or no route
        if len(parts) < 2 or not parts[1]:
            return None, {}
        params, rest, template = {"model": parts[1]}, parts[2:], MODEL
        if len(rest) >= 2 and rest[0] == "versions" and rest[1]:
            params["version"], rest, template = rest[1], rest[2:], VERSION
        if len(rest) > 1 or (rest and rest[0] not in ("ready", "infer")):
            return None, {}
        return template + ("/" + rest[0] if rest else ""), params

    def match(self, scope: Scope) -> V2Route | None:
        """The route of an http `scope` under /v2 (its path parameters set in the scope: a `NOT_FOUND`
        route for a path no route has, a 405 one for a known path with another method), else None."""
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v2") or (len(path) > 3 and path[3] != "/"):
            return None
        template, params = self._template(path)
        route = self._by_template.get(template) if template is not None else None
        if route is None:
            return NOT_FOUND
        scope["path_params"] = params
        if route.method != scope["method"]:
            return V2Route(route.path, scope["method"], partial(_method_not_allowed, route.method))
        return route

    @staticmethod
    async def serve(route: V2Route, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = route  # the metrics' label: the route template, not the raw path
        try:
            status, headers, body = await route.handler(scope, receive)
        except Exception as exc:  # nothing was sent yet: every failure gets its protocol-shaped answer
            await oip_error_response(exc, scope["method"], scope["path"])(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


async def _method_not_allowed(allowed: str, scope: Scope, receive: Receive) -> Answer:
    raise ApiError(405, "method_not_allowed", f"{scope['method']} {scope['path']}: use {allowed}",
                   headers={"Allow": allowed})
