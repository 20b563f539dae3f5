"""Prediction routes: `POST /models/{task}/predict` for every registered task, and the store's named
endpoints (`routes.json`: `/digits`, `/imagenet/top5`, ...) as aliases of the same handler.

One handler for all: the body is read once (size-limited), the query is parsed by one model, and the
model server runs the rest; errors are mapped to HTTP in `app.errors` only. The handler answers with
the response model's JSON directly (`response_model` documents it): FastAPI's re-validation of an
object the kind just built would cost more than the small image's decode (bench.ab measures it).
"""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.kinds import KINDS, PredictParams, RawRequest
from app.schemas import ErrorResponse
from app.uploads import read_body
from models.registry import MAX_NAME_LENGTH

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "undecodable image or malformed body",
        404: "unknown task, version or alias",
        409: "the version fails verification",
        413: "request body or image too large",
        415: "wrong content type for the task's kind, or a file that is not a supported image",
        422: "invalid parameters or body fields (named in the message)",
        503: "the model's queue is full (Retry-After says when to retry)",
        504: "inference did not finish within the request timeout",
    }.items()
}
IMAGE_BODY = {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"},
                            "description": "one or more images (PNG, JPEG, BMP, GIF, WebP, TIFF)"}}}}}


class PredictQuery(BaseModel):
    """Query parameters of every prediction route."""

    model_config = ConfigDict(extra="ignore")

    version: str = Field("production", min_length=1, max_length=MAX_NAME_LENGTH, description="version id or alias")
    top_k: int | None = Field(None, ge=1, description="image kinds: labels per file (default and maximum: the "
                              "version's manifest, `serving.default_top_k` / `serving.max_top_k`)")
    debug: bool = Field(False, description="image kinds: also return the image the network saw")


def request_bodies(kinds: list[str]) -> dict[str, Any]:
    """The OpenAPI request body of a route serving `kinds`."""
    content: dict[str, Any] = {}
    for kind in kinds:
        request_model = getattr(KINDS[kind], "request_model", None)
        content.update(IMAGE_BODY if request_model is None else
                       {"application/json": {"schema": request_model.model_json_schema()}})
    return {"requestBody": {"required": True, "content": content}}


async def answer(task: str, request: Request, query: PredictQuery) -> Response:
    """The one prediction path: read the body, hand it to the model server, write its JSON."""
    server = request.app.state.server
    body = await read_body(request, server.settings.max_request_bytes)
    raw = RawRequest(body, request.headers.get("content-type"), PredictParams(query.version, query.top_k, query.debug))
    result = await server.predict(task, raw)
    return Response(result.model_dump_json(), media_type="application/json")


TaskPath = Annotated[str, Path(min_length=1, max_length=MAX_NAME_LENGTH, description="task name", examples=["digits"])]


async def predict(task: TaskPath, request: Request, query: Annotated[PredictQuery, Query()]) -> Response:
    return await answer(task, request, query)


def alias_endpoint(task: str):
    """An endpoint answering for `task` (the same handler as `POST /models/{task}/predict`)."""

    async def endpoint(request: Request, query: Annotated[PredictQuery, Query()]) -> Response:
        return await answer(task, request, query)

    return endpoint


def predict_router(routes: dict[str, str], kinds_of: dict[str, str]) -> APIRouter:
    """The generic route plus one alias per named endpoint (`routes`: path -> task; `kinds_of`: task -> kind,
    for the docs of each alias)."""
    router = APIRouter(tags=["predict"])
    union = KINDS["image-classification"].response_model | KINDS["text-completion"].response_model
    router.add_api_route("/models/{task}/predict", predict, methods=["POST"], response_model=union,
                         responses=ERROR_RESPONSES, openapi_extra=request_bodies(sorted(KINDS)),
                         summary="Predict with any registered task (its kind says what the body is)")
    for path, task in routes.items():
        kind = kinds_of.get(task)
        response_model = KINDS[kind].response_model if kind else union
        router.add_api_route(path, alias_endpoint(task), methods=["POST"], response_model=response_model,
                             responses=ERROR_RESPONSES, openapi_extra=request_bodies([kind] if kind else sorted(KINDS)),
                             summary=f"Predict with task {task!r} (alias of POST /models/{task}/predict)",
                             name=f"predict_{task}")
    return router
