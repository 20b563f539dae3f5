"""`POST /components`: electronic-component photos, with an honest "unknown" flag."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import Field

from app.dependencies import MetricsDep, ServiceDep, SettingsDep
from app.routes.classify import ERROR_RESPONSES, MULTIPART_BODY, classify_endpoint
from app.schemas import ClassificationResponse, Prediction

router = APIRouter(tags=["predict"])


class ComponentPrediction(Prediction):
    unknown: bool = Field(description="confidence below the version's threshold, calibrated on validation photos "
                                      "(manifest `unknown_threshold`): likely not one of the known components")


class ComponentsResponse(ClassificationResponse):
    predictions: list[ComponentPrediction]


@router.post(
    "/components",
    response_model=ComponentsResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=MULTIPART_BODY,
    summary="Classify photos of electronic components (capacitor, ic, relay, resistor, ...)",
)
async def classify_components(
    request: Request,
    settings: SettingsDep,
    service: ServiceDep,
    metrics: MetricsDep,
    top_k: Annotated[int, Query(ge=1, le=10, description="how many labels to return per file")] = 3,
    version: Annotated[str, Query(min_length=1, max_length=80, description="version id or alias")] = "production",
) -> ComponentsResponse:
    """One prediction per `file` part, in order, with `unknown: true` when the model is not confident
    enough for the photo to be one of its classes (a cat, a blank wall)."""
    response = await classify_endpoint("components", request, top_k, version, settings, service, metrics)
    model = await service.acquire("components", response.model.version)  # the same, already loaded version
    threshold = float(model.manifest.get("unknown_threshold", 0.0))
    return ComponentsResponse(model=response.model, predictions=[
        ComponentPrediction(**p.model_dump(), unknown=p.confidence < threshold) for p in response.predictions])
