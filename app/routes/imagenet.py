"""`POST /imagenet/top5`: ImageNet-1k classification of photos (the model zoo's production version)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.dependencies import MetricsDep, ServiceDep, SettingsDep
from app.routes.classify import ERROR_RESPONSES, MULTIPART_BODY, classify_endpoint, classify_route
from app.schemas import ClassificationResponse

router = APIRouter(tags=["predict"])
ROUTE = classify_route("/imagenet/top5", "imagenet", default_top_k=5, max_top_k=20)


@router.post(
    "/imagenet/top5",
    response_model=ClassificationResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=MULTIPART_BODY,
    summary="Classify photos into the 1000 ImageNet classes (top-5 by default)",
)
async def classify_imagenet(
    request: Request,
    settings: SettingsDep,
    service: ServiceDep,
    metrics: MetricsDep,
    top_k: Annotated[int, Query(ge=1, le=ROUTE.max_top_k, description="how many classes to return per file")] = ROUTE.default_top_k,
    version: Annotated[str, Query(min_length=1, max_length=80, description="version id or alias")] = "production",
    debug: Annotated[bool, Query(description="also return the (cropped) image the network saw")] = False,
) -> ClassificationResponse:
    """One prediction per `file` part, in order. Each `top` entry has the full class line as `label`
    (e.g. "tench, Tinca tinca"), its `index` (0-999) and `probability`. Photos are resized and
    centre-cropped as the version's manifest says (EfficientNet-Lite0 by default: 256 px, crop 224)."""
    return await classify_endpoint("imagenet", request, top_k, version, settings, service, metrics, debug)
