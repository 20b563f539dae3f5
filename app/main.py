"""The ASGI app, built only by the factory: `create_app(settings)`.

`python -m app` runs it (`app/__main__.py`); `uvicorn --factory app.main:create_app` does too.
Importing this module sets nothing process-wide; building the app sets the torch threads and the
GIL switch interval from the settings, since both are per process.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import install_error_handlers
from app.metrics import Metrics
from app.middleware import RequestMiddleware
from app.routes import aliases, health, models, page, predict
from app.serving.server import ModelServer
from app.settings import Settings
from app.v2 import V2Routes
from models.devices import select_device
from models.registry import DEFAULT_ALIAS, ModelRegistry, RegistryError
from models.registry.synced import open_registry

log = logging.getLogger("app")

DESCRIPTION = """Inference for every registered model, and the registry itself.

Errors are always `{"error": {"code": "...", "message": "..."}}`. Registry mutations need
`Authorization: Bearer $MODELHOUSE_ADMIN_TOKEN`.
"""


def preload_and_freeze(server: ModelServer, freeze: bool = True) -> None:
    """Load every production model, then move everything allocated so far out of the garbage collector's
    reach (`gc.freeze`): the loaded networks, ONNX sessions and imported modules are millions of objects
    that never die, and a full collection walking them stalled the event loop under load (measured with
    gc.callbacks). Objects made later, request data included, are collected as usual."""
    server.preload()
    if freeze and not server.closing:
        gc.collect()
        gc.freeze()


def kinds_of(registry: ModelRegistry, tasks: list[str]) -> dict[str, str]:
    """task -> the kind of its production version, for the docs of its named endpoint (unknown ones left out)."""
    kinds = {}
    for task in tasks:
        try:
            kinds[task] = registry.manifest(task, DEFAULT_ALIAS).kind
        except RegistryError as exc:
            log.warning("named endpoint for %s: %s", task, exc)
    return kinds


class ServiceApp(FastAPI):
    """FastAPI, with the prediction routes (and the Open Inference Protocol's, `app.v2`) answered inside the
    service's middleware (`user_middleware`: `RequestMiddleware`'s request ids and metrics, and whatever
    `add_middleware` adds later) but before FastAPI's own per-request layers (see `app.routes.predict`).
    Every other route takes FastAPI's usual stack inside the same middleware."""

    predict_routes: predict.PredictRoutes
    v2_routes: V2Routes = V2Routes()  # stateless

    def build_middleware_stack(self) -> ASGIApp:
        user_middleware, self.user_middleware = self.user_middleware, []
        try:
            fastapi_stack = super().build_middleware_stack()  # its error, body-limit and exception layers, router
        finally:
            self.user_middleware = user_middleware
        routes, v2 = self.predict_routes, self.v2_routes

        async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
            route = routes.match(scope)
            if route is not None:
                await routes.serve(route, scope, receive, send)
                return
            v2_route = v2.match(scope)
            if v2_route is None:
                await fastapi_stack(scope, receive, send)
            else:
                await v2.serve(v2_route, scope, receive, send)

        stack: ASGIApp = dispatch
        for cls, args, kwargs in reversed(user_middleware):
            stack = cls(stack, *args, **kwargs)
        return stack


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service from `settings` (default: read from `MODELHOUSE_*` environment variables)."""
    settings = settings or Settings()
    torch.set_num_threads(settings.torch_threads)
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    registry = open_registry(settings.store or settings.store_dir, settings.cache_dir)
    metrics = Metrics()
    server = ModelServer(settings, registry, select_device(settings.device), metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Load in the background so /healthz answers at once and /readyz says 503 until loaded.
        task = asyncio.create_task(server.pool.run(preload_and_freeze, server, settings.gc_freeze)) if settings.preload else None
        if task is None:
            server.ready = True
        server.heartbeat.start(server.pool.run)
        if server.store_poller is not None:
            server.store_poller.start()
        yield
        if task is not None and not task.done():
            task.cancel()
        await server.close()

    telemetry = {} if settings.telemetry else {"tracing": False, "metrics": False, "logs": False}
    app = ServiceApp(title="modelhouse", version="0.1.0", description=DESCRIPTION, lifespan=lifespan, telemetry=telemetry,
                     max_body_size=settings.max_request_bytes)  # the routes FastAPI answers; predictions: read_body
    app.state.settings, app.state.server, app.state.metrics = settings, server, metrics
    app.add_middleware(RequestMiddleware, metrics=metrics)
    install_error_handlers(app)
    if server.store_poller is not None:  # the mirror first: the named endpoints are the store's routes.json
        server.store_poller.sync_now(warm=False)  # unreachable: serve what the mirror has, degraded
    routes = registry.routes()
    app.predict_routes = predict.PredictRoutes(routes)
    for module in (aliases, models, health, page):
        app.include_router(module.router)
    app.mount("/static", page.static_files(), name="static")
    documented = predict.documented_routes(routes, kinds_of(registry, sorted(set(routes.values()))),
                                           settings.max_files_per_request)
    app.openapi = lambda: openapi_schema(app, documented)  # type: ignore[method-assign]
    return app


def openapi_schema(app: FastAPI, documented: APIRouter) -> dict[str, Any]:
    """The app's OpenAPI schema, with the prediction routes described by `documented` (built once)."""
    if app.openapi_schema is None:
        app.openapi_schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                         routes=[*documented.routes, *app.routes])
    return app.openapi_schema
