"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.dependencies import MetricsDep, ServerDep
from app.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}},
            summary="Readiness: every production model is loaded (503 until then); an unreachable object "
                    "store leaves it ready, with store: degraded")
async def readyz(server: ServerDep) -> Readiness | JSONResponse:
    poller = server.store_poller
    store = "local" if poller is None else "degraded" if poller.state.degraded else "ok"
    body = Readiness(status="ready" if server.ready else "loading", store=store, models=server.readiness,
                     backends=server.readiness_backends)
    if not server.ready:
        return JSONResponse(body.model_dump(), status_code=503)
    return body


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (text format)")
async def metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.exposition), media_type=CONTENT_TYPE_LATEST)
