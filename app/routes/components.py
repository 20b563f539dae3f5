"""`POST /components`: electronic-component photos, with an honest "unknown" flag."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.dependencies import MetricsDep, ServiceDep, SettingsDep
from app.routes.classify import ERROR_RESPONSES, MULTIPART_BODY, classify_endpoint, classify_route
from app.schemas import ClassificationResponse

router = APIRouter(tags=["predict"])
ROUTE = classify_route("/components", "components", default_top_k=3, max_top_k=10)


@router.post(
    "/components",
    response_model=ClassificationResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=MULTIPART_BODY,
    summary="Classify photos of electronic components (capacitor, ic, relay, resistor, ...)",
)
async def classify_components(
    request: Request,
    settings: SettingsDep,
    service: ServiceDep,
    metrics: MetricsDep,
    top_k: Annotated[int, Query(ge=1, le=ROUTE.max_top_k, description="how many labels to return per file")] = ROUTE.default_top_k,
    version: Annotated[str, Query(min_length=1, max_length=80, description="version id or alias")] = "production",
    debug: Annotated[bool, Query(description="also return the (cropped) image the network saw")] = False,
) -> ClassificationResponse:
    """One prediction per `file` part, in order, with `unknown: true` when the model is not confident
    enough for the photo to be one of its classes (a cat, a blank wall): the threshold is the version's
    `unknown_threshold`, calibrated on the validation photos."""
    return await classify_endpoint("components", request, top_k, version, settings, service, metrics, debug)
