"""`POST /digits`: handwritten digit classification."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.dependencies import MetricsDep, ServiceDep, SettingsDep
from app.routes.classify import ERROR_RESPONSES, MULTIPART_BODY, classify_endpoint, classify_route
from app.schemas import ClassificationResponse

router = APIRouter(tags=["predict"])
ROUTE = classify_route("/digits", "digits", default_top_k=3, max_top_k=10)


@router.post(
    "/digits",
    response_model=ClassificationResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=MULTIPART_BODY,
    summary="Classify photos or drawings of handwritten digits",
)
async def classify_digits(
    request: Request,
    settings: SettingsDep,
    service: ServiceDep,
    metrics: MetricsDep,
    top_k: Annotated[int, Query(ge=1, le=ROUTE.max_top_k, description="how many labels to return per file")] = ROUTE.default_top_k,
    version: Annotated[str, Query(min_length=1, max_length=80, description="version id or alias")] = "production",
    debug: Annotated[bool, Query(description="also return the 28x28 image the network saw")] = False,
) -> ClassificationResponse:
    """One prediction per `file` part, in order. Any photo works: dark ink on light paper or the
    reverse, any size, off-centre, with alpha or EXIF rotation; it is normalised the way MNIST was made."""
    return await classify_endpoint("digits", request, top_k, version, settings, service, metrics, debug)
