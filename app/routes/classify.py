"""Shared handling of image-classification endpoints (`/digits`, `/components`, `/imagenet/top5`)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import partial

from fastapi import Request

from app.dependencies import MetricsDep, ServiceDep, SettingsDep
from app.errors import ApiError, domain_status
from app.batching import QueueFullError, gather_with_timeout
from app.inference import ImageItem, array_to_data_url, classify_batch
from app.metrics import Metrics
from app.model_service import ModelService
from app.schemas import ClassificationResponse, ErrorResponse, ModelRef, Prediction, TopEntry
from app.settings import Settings
from app.uploads import file_parts, parse_multipart, read_body
from models.imaging import ImageError
from models.registry import LoadedModel

MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                                 "description": "one or more images (PNG, JPEG, BMP, GIF, WebP, TIFF)"}
                    },
                }
            }
        },
    }
}
ERROR_RESPONSES = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "undecodable image or malformed multipart body",
        404: "unknown version or alias",
        413: "upload or image too large",
        415: "not multipart/form-data, or a file that is not a supported image",
        422: "invalid parameters (top_k, version, missing file part)",
        503: "the model's queue is full (Retry-After says when to retry)",
        504: "inference did not finish within the request timeout",
    }.items()
}


@dataclass(frozen=True)
class ClassifyRoute:
    """An image-classification endpoint: its task and its `top_k` default and maximum."""

    task: str
    default_top_k: int
    max_top_k: int


# path -> route; the FastAPI routes and the fast lane (app/fastlane.py) both read this table.
CLASSIFY_ROUTES: dict[str, ClassifyRoute] = {}


def classify_route(path: str, task: str, default_top_k: int, max_top_k: int) -> ClassifyRoute:
    """Declare an image-classification endpoint (call at import time of its route module)."""
    CLASSIFY_ROUTES[path] = ClassifyRoute(task, default_top_k, max_top_k)
    return CLASSIFY_ROUTES[path]


async def classify_endpoint(task: str, request: Request, top_k: int, version: str, settings: SettingsDep,
                            service: ServiceDep, metrics: MetricsDep, debug: bool = False) -> ClassificationResponse:
    """The FastAPI-routed path: read the body (size-limited) and classify it."""
    body = await read_body(request, settings.max_request_bytes)
    return await classify(task, body, request.headers.get("content-type"), top_k, version, settings, service, metrics,
                          debug=debug)


async def classify(task: str, body: bytes, content_type: str | None, top_k: int, version: str, settings: Settings,
                   service: ModelService, metrics: Metrics, *, debug: bool = False) -> ClassificationResponse:
    """Resolve the version once and queue every file into the model's micro-batcher; the files
    of this and concurrent requests share forward passes. Raises `ApiError` or domain errors."""
    started = time.perf_counter()
    parts = file_parts(parse_multipart(body, content_type), "file", settings.max_files_per_request)
    model = await service.acquire(task, version)
    if top_k > len(model.labels):
        raise ApiError(422, "invalid_parameters", f"top_k: must be at most {len(model.labels)} for {task}")
    rows = await run_batched(model, [ImageItem(p.data, p.content_type) for p in parts], settings, service, metrics)
    threshold = model.manifest.get("unknown_threshold")  # calibrated on validation photos (components)
    predictions = []
    for index, (part, row) in enumerate(zip(parts, rows)):
        if isinstance(row, ImageError):
            status, code = domain_status(row) or (400, "undecodable_image")
            raise ApiError(status, code, f"file {index + 1} ({part.filename or 'unnamed'}): {row}")
        if isinstance(row, BaseException):  # the batch itself failed (a bug, logged by the batcher): a 500
            raise row
        values, indices = row.probabilities.topk(top_k)
        top = [TopEntry(label=model.labels[i], index=i, probability=round(p, 6))
               for p, i in zip(values.tolist(), indices.tolist())]
        predictions.append(Prediction(
            filename=part.filename, label=top[0].label, confidence=top[0].probability, top=top,
            unknown=None if threshold is None else float(row.probabilities.max()) < float(threshold),
            input_image=array_to_data_url(row.array) if debug else None))
    metrics.predictions.labels(task, model.version).inc(len(parts))
    metrics.prediction_latency.labels(task, model.version).observe(time.perf_counter() - started)
    return ClassificationResponse(model=ModelRef(task=task, version=model.version), predictions=predictions)


async def run_batched(model: LoadedModel, items: list[ImageItem], settings: Settings, service: ModelService,
                      metrics: Metrics) -> list:
    """Outcomes of `items` through the model's micro-batcher: 503 when its queue is full, 504 past the deadline."""
    batcher = service.batcher(model, partial(classify_batch, model, max_pixels=settings.max_image_pixels),
                              partial(metrics.batch_observer, model.task, model.version))
    try:
        futures = batcher.submit(items)
    except QueueFullError as exc:
        metrics.rejected.labels(model.task, model.version, "queue_full").inc()
        raise ApiError(503, "overloaded", f"{model.task} is at capacity ({exc}); retry shortly",
                       headers={"Retry-After": "1"}) from exc
    try:
        return await gather_with_timeout(futures, settings.request_timeout_s)
    except asyncio.TimeoutError:
        metrics.rejected.labels(model.task, model.version, "timeout").inc()
        raise ApiError(504, "timeout", f"inference did not finish within {settings.request_timeout_s} s") from None
