"""The ASGI app: `app.main:app`, built by `create_app(settings)`."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app.batching import BatchPolicy
from app.errors import install_error_handlers
from app.fastlane import FastLane
from app.metrics import Metrics, MetricsMiddleware
from app.model_service import ModelService, pick_device
from app.routes import components, digits, health, imagenet, models, page, rnn
from app.settings import Settings
from models.registry import ModelRegistry

log = logging.getLogger("app")

DESCRIPTION = """Inference for registered models, and the registry itself.

Errors are always `{"error": {"code": "...", "message": "..."}}`. Registry mutations need
`Authorization: Bearer $MODELHOUSE_ADMIN_TOKEN`.
"""


def preload_and_freeze(service: ModelService, freeze: bool = True) -> None:
    """Load every production model, then move everything allocated so far out of the garbage collector's
    reach (`gc.freeze`): the loaded networks, ONNX sessions and imported modules are millions of objects
    that never die, and a full collection walking them stalled the event loop for up to 200 ms under
    load (the p99 of /digits at 32 connections; measured with gc.callbacks). Objects made later, request
    data included, are collected as usual."""
    service.preload()
    if freeze:
        gc.collect()
        gc.freeze()


class ServiceApp(FastAPI):
    """FastAPI, with the classification POSTs handed to the fast lane (app/fastlane.py) before
    FastAPI's own middleware stack runs; `fast_lane` None sends everything through FastAPI."""

    fast_lane: FastLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.fast_lane.route_for(scope) if self.fast_lane is not None else None
        if route is None:
            await super().__call__(scope, receive, send)
        else:
            await self.fast_lane.serve(route, scope, receive, send)


def create_app(settings: Settings | None = None) -> ServiceApp:
    """Build the service from `settings` (default: read from `MODELHOUSE_*` environment variables)."""
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(settings.torch_threads)
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)  # process-wide, like the torch threads
    policy = BatchPolicy(settings.batch_max_size, settings.batch_max_wait_ms, settings.queue_max)
    service = ModelService(ModelRegistry(settings.store_dir), pick_device(settings.device),
                           max_loaded=settings.max_loaded_models, workers=settings.inference_workers,
                           batch_policy=policy, task_policies=settings.batching, backends=settings.backends,
                           threads=settings.torch_threads)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Load in the background so /healthz answers at once and /readyz says 503 until loaded.
        task = asyncio.create_task(service.run(preload_and_freeze, service, settings.gc_freeze)) if settings.preload else None
        if task is None:
            service.ready = True
        yield
        if task is not None and not task.done():
            task.cancel()
        await service.close()

    app = ServiceApp(title="modelhouse", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings, app.state.service, app.state.metrics = settings, service, Metrics()
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    if settings.fast_lane:
        app.fast_lane = FastLane(settings, service, app.state.metrics)
    install_error_handlers(app)
    for module in (digits, imagenet, components, rnn, models, health, page):
        app.include_router(module.router)
    app.mount("/static", page.static_files(), name="static")
    return app


app = create_app()
