"""Shared handling of image-classification endpoints (`/digits`, later `/components`, `/imagenet/top5`)."""

from __future__ import annotations

import time

from fastapi import Request

from app.dependencies import MetricsDep, ServiceDep, SettingsDep
from app.errors import DOMAIN_ERRORS, ApiError
from app.inference import FileError, classify_parts
from app.schemas import ClassificationResponse, ErrorResponse, ModelRef, Prediction, TopEntry
from app.uploads import file_parts, parse_multipart, read_body

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
    }.items()
}


async def classify_endpoint(task: str, request: Request, top_k: int, version: str, settings: SettingsDep,
                            service: ServiceDep, metrics: MetricsDep) -> ClassificationResponse:
    """Read the upload once, resolve the version once, classify every file in one batch."""
    started = time.perf_counter()
    body = await read_body(request, settings.max_request_bytes)
    parts = file_parts(parse_multipart(body, request.headers.get("content-type")), "file",
                       settings.max_files_per_request)
    model = await service.acquire(task, version)
    if top_k > len(model.labels):
        raise ApiError(422, "invalid_parameters", f"top_k: must be at most {len(model.labels)} for {task}")
    try:
        result = await service.run(lambda: classify_parts(model, parts, max_pixels=settings.max_image_pixels))
    except FileError as exc:
        status, code = DOMAIN_ERRORS[type(exc.error)]
        raise ApiError(status, code, str(exc)) from exc
    predictions = []
    values, indices = result.probabilities.topk(top_k, dim=1)
    for part, row_values, row_indices in zip(parts, values.tolist(), indices.tolist()):
        top = [TopEntry(label=model.labels[i], index=i, probability=round(p, 6))
               for p, i in zip(row_values, row_indices)]
        predictions.append(Prediction(filename=part.filename, label=top[0].label, confidence=top[0].probability, top=top))
    metrics.inference_latency.labels(task, model.version).observe(result.seconds)
    metrics.predictions.labels(task, model.version).inc(len(parts))
    metrics.prediction_latency.labels(task, model.version).observe(time.perf_counter() - started)
    return ClassificationResponse(model=ModelRef(task=task, version=model.version), predictions=predictions)
