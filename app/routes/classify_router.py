"""One factory for every image-classification endpoint (`/digits`, `/components`, `/imagenet/top5`).

Each call declares the route in `CLASSIFY_ROUTES` (read by the fast lane) and returns a FastAPI router
whose endpoint validates the same query parameters, for the OpenAPI docs and `MODELHOUSE_FAST_LANE=false`.
No `from __future__ import annotations` here: FastAPI reads the endpoint's annotations at runtime, and
they close over this call's `top_k` limits.
"""

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.dependencies import MetricsDep, ServiceDep, SettingsDep
from app.routes.classify import ERROR_RESPONSES, MULTIPART_BODY, classify_endpoint, classify_route
from app.schemas import ClassificationResponse


def classify_router(path: str, task: str, *, default_top_k: int, max_top_k: int, summary: str,
                    description: str) -> APIRouter:
    """A router with `POST path` classifying uploaded images with `task`'s model."""
    classify_route(path, task, default_top_k, max_top_k)

    async def endpoint(
        request: Request,
        settings: SettingsDep,
        service: ServiceDep,
        metrics: MetricsDep,
        top_k: Annotated[int, Query(ge=1, le=max_top_k, description="how many labels to return per file")] = default_top_k,
        version: Annotated[str, Query(min_length=1, max_length=80, description="version id or alias")] = "production",
        debug: Annotated[bool, Query(description="also return the image the network saw (after preprocessing)")] = False,
    ) -> ClassificationResponse:
        return await classify_endpoint(task, request, top_k, version, settings, service, metrics, debug)

    router = APIRouter(tags=["predict"])
    router.add_api_route(path, endpoint, methods=["POST"], response_model=ClassificationResponse,
                         responses=ERROR_RESPONSES, openapi_extra=MULTIPART_BODY, summary=summary,
                         description=description, name=f"classify_{task}")
    return router
