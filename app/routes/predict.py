"""Prediction routes: `POST /models/{task}/predict` for every registered task, and the store's named
endpoints (`routes.json`: `/digits`, `/imagenet/top5`, ...) as aliases of the same handler.

One handler for all (`PredictEndpoint`): the query is parsed by one pydantic model (`PredictQuery`),
the body read once by `app.uploads.read_body`, and the model server runs the rest; errors are raised
and turned into answers by `app.errors.error_response` only. `PredictRoutes` matches these paths; the
app (`app.main.ServiceApp`) puts it inside the service's middleware (request ids, metrics and any
middleware added later) and in front of FastAPI's own per-request layers (its router, dependency
solving, response re-validation, exception middlewares), which cost more CPU than decoding a small image
(bench.ab; docs/performance.md). The OpenAPI description of the same route table is built from FastAPI
routes that are documented, never mounted (`documented_routes`).
"""

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from app.errors import error_response
from app.kinds import KINDS, PredictParams, RawRequest
from app.schemas import ErrorResponse
from app.uploads import header, read_body
from models.registry import MAX_NAME_LENGTH

# No `from __future__ import annotations`: FastAPI reads the documented endpoints' annotations at runtime.
GENERIC_PATH = "/models/{task}/predict"
JSON_HEADERS = [(b"content-type", b"application/json")]
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "undecodable image or malformed body (a multipart body without its closing boundary)",
        408: "the request body did not arrive within MODELHOUSE_BODY_TIMEOUT_S",
        404: "unknown task, version or alias",
        409: "the version fails verification",
        413: "request body, an image, or all the images of the request together too large",
        415: "wrong content type for the task's kind, or a file that is not a supported image",
        422: "invalid parameters or body fields (named in the message): more files or multipart parts than "
             "allowed; an image of too extreme an aspect ratio",
        503: "the model's queue is full (Retry-After says when to retry)",
        504: "inference did not finish within the request timeout",
    }.items()
}
IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/gif", "image/webp", "image/tiff")


def image_body(max_files: int) -> dict[str, Any]:
    return {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"},
                                "minItems": 1, "maxItems": max_files,
                                "description": "one or more images (PNG, JPEG, BMP, GIF, WebP, TIFF)"}}},
        "encoding": {"file": {"contentType": ", ".join(IMAGE_TYPES)}}}}


class PredictQuery(BaseModel):
    """Query parameters of every prediction route."""

    model_config = ConfigDict(extra="ignore")

    version: str = Field("production", min_length=1, max_length=MAX_NAME_LENGTH, description="version id or alias")
    top_k: int | None = Field(None, ge=1, description="image kinds: labels per file (default and maximum: the "
                              "version's manifest, `serving.default_top_k` / `serving.max_top_k`)")
    debug: bool = Field(False, description="image kinds: also return the image the network saw")


DEFAULT_PARAMS = PredictParams()


def parse_query(query_string: bytes) -> PredictParams:
    """The query parameters, by `PredictQuery`'s rules (422 naming the bad one; the last of repeated ones wins)."""
    if not query_string:
        return DEFAULT_PARAMS
    try:
        query = PredictQuery.model_validate(dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)))
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]) from None
    return PredictParams(query.version, query.top_k, query.debug)


class PredictEndpoint:
    """The one prediction handler: `task` fixed (a named endpoint) or from the path."""

    def __init__(self, task: str | None = None) -> None:
        self.task = task

    async def __call__(self, scope: Scope, receive: Receive) -> bytes:
        """The JSON body of the 200 answer; raises for every other outcome."""
        server = scope["app"].state.server
        task = self.task or scope["path_params"]["task"]
        params = parse_query(scope.get("query_string", b""))
        settings = server.settings
        body = await read_body(scope, receive, settings.max_request_bytes, settings.body_timeout_s)
        result = await server.predict(task, RawRequest(body, header(scope, b"content-type"), params))
        return result.model_dump_json().encode()


class PredictRoutes:
    """The generic route and one alias per named endpoint (`routes`: path -> task), and the ASGI app that
    answers them with `PredictEndpoint`, every exception answered by `error_response`."""

    def __init__(self, routes: dict[str, str]) -> None:
        self.routes = [Route(GENERIC_PATH, PredictEndpoint(), methods=["POST"], name="predict"),
                       *(Route(path, PredictEndpoint(task), methods=["POST"], name=f"predict_{task}")
                         for path, task in routes.items())]
        self._by_path = {route.path: route for route in self.routes[1:]}

    def match(self, scope: Scope) -> Route | None:
        """The route `scope`'s path is for (its path parameters set in the scope), else None."""
        if scope["type"] != "http":
            return None
        path = scope["path"]
        route = self._by_path.get(path)
        if route is not None:
            return route
        if path.startswith("/models/") and path.endswith("/predict"):
            match, child = self.routes[0].matches(scope)
            if match is not Match.NONE:  # PARTIAL: the path fits, the method does not (serve answers 405)
                scope.update(child)
                return self.routes[0]
        return None

    @staticmethod
    async def serve(route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = route  # the metrics' label: the route template, not the raw path
        try:
            if scope["method"] != "POST":
                raise StarletteHTTPException(405, "Method Not Allowed", headers={"Allow": "POST"})
            body = await route.endpoint(scope, receive)
        except Exception as exc:  # nothing was sent yet: every failure gets its JSON answer
            await error_response(exc, "POST", scope["path"])(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
        await send({"type": "http.response.body", "body": body})


# ---- the OpenAPI description of the same table ----------------------------------------------------
IMAGE_ONLY_PARAMETERS = ("top_k", "debug")


def query_parameters(kinds: list[str]) -> list[dict[str, Any]]:
    """`PredictQuery` as OpenAPI query parameters of a route serving `kinds` (the docs and the parser are
    the same model; a text-only route documents only `version`)."""
    schema = PredictQuery.model_json_schema()
    images = any(getattr(KINDS[kind], "request_model", None) is None for kind in kinds)
    return [{"name": name, "in": "query", "required": False, "schema": field,
             "description": field.get("description", "")} for name, field in schema["properties"].items()
            if images or name not in IMAGE_ONLY_PARAMETERS]


def openapi_of(kinds: list[str], *, task_in_path: bool, max_files: int) -> dict[str, Any]:
    """The OpenAPI parameters and request body of a route serving `kinds`."""
    content: dict[str, Any] = {}
    for kind in kinds:
        request_model = getattr(KINDS[kind], "request_model", None)
        content.update(image_body(max_files) if request_model is None else
                       {"application/json": {"schema": request_model.model_json_schema()}})
    task = [{"name": "task", "in": "path", "required": True, "description": "task name",
             "schema": {"type": "string", "maxLength": MAX_NAME_LENGTH}, "example": "digits"}]
    return {"parameters": (task if task_in_path else []) + query_parameters(kinds),
            "requestBody": {"required": True, "content": content}}


async def _documented_only() -> None:  # pragma: no cover - never mounted: PredictEndpoint serves these paths
    raise NotImplementedError


def documented_routes(routes: dict[str, str], kinds_of: dict[str, str], max_files: int) -> APIRouter:
    """FastAPI routes describing `PredictRoutes(routes)` for the OpenAPI schema (`kinds_of`: task -> kind)."""
    router = APIRouter(tags=["predict"])
    union = KINDS["image-classification"].response_model | KINDS["text-completion"].response_model
    router.add_api_route(GENERIC_PATH, _documented_only, methods=["POST"], response_model=union,
                         responses=ERROR_RESPONSES, openapi_extra=openapi_of(sorted(KINDS), task_in_path=True, max_files=max_files),
                         summary="Predict with any registered task (its kind says what the body is)", name="predict")
    for path, task in routes.items():
        kind = kinds_of.get(task)
        router.add_api_route(path, _documented_only, methods=["POST"], name=f"predict_{task}",
                             response_model=KINDS[kind].response_model if kind else union, responses=ERROR_RESPONSES,
                             openapi_extra=openapi_of([kind] if kind else sorted(KINDS), task_in_path=False,
                                                   max_files=max_files),
                             summary=f"Predict with task {task!r} (alias of POST /models/{task}/predict)")
    return router
