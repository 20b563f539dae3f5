"""`Annotated` dependencies shared by the routes."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import ApiError
from app.metrics import Metrics
from app.serving.server import ModelServer
from app.settings import Settings


# async on purpose: FastAPI runs plain `def` dependencies in its thread pool, a thread hop
# per dependency per request; these only read app state.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_server(request: Request) -> ModelServer:
    return request.app.state.server


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServerDep = Annotated[ModelServer, Depends(get_server)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
_bearer = HTTPBearer(auto_error=False, description="MODELHOUSE_ADMIN_TOKEN")


async def require_admin(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """403 when no admin token is configured (mutations disabled), 401 without a bearer token, 403 when wrong."""
    if settings.admin_token is None or not settings.admin_token.get_secret_value():
        raise ApiError(403, "forbidden", "registry mutations are disabled: MODELHOUSE_ADMIN_TOKEN is not set")
    if credentials is None:
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <admin token>'",
                       headers={"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(credentials.credentials.encode(), settings.admin_token.get_secret_value().encode()):
        raise ApiError(403, "forbidden", "the admin token is not valid")
