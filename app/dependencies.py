"""`Annotated` dependencies shared by the routes."""

from __future__ import annotations

import hashlib
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
_bearer = HTTPBearer(auto_error=False, description="MODELHOUSE_ADMIN_TOKEN or one of MODELHOUSE_ADMIN_TOKENS")


def token_identity(token: str) -> str:
    """How the history names the caller of `MODELHOUSE_ADMIN_TOKEN`: `token:` and the first 12 hex digits of
    its sha256 (tells tokens apart, cannot be sent back as one)."""
    return f"token:{hashlib.sha256(token.encode()).hexdigest()[:12]}"


def admin_identities(settings: Settings) -> dict[str, str]:
    """{identity: token} of every configured admin token: the named ones, and the unnamed one."""
    identities = {name: token.get_secret_value() for name, token in settings.admin_tokens.items()}
    if settings.admin_token is not None and settings.admin_token.get_secret_value():
        identities[token_identity(settings.admin_token.get_secret_value())] = settings.admin_token.get_secret_value()
    return identities


async def require_admin(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """The caller's identity (the token's name, or `token_identity`; never the token), for the history.
    403 when no admin token is configured (mutations disabled), 401 without a bearer token, 403 when wrong."""
    identities = admin_identities(settings)
    if not identities:
        raise ApiError(403, "forbidden", "registry mutations are disabled: neither MODELHOUSE_ADMIN_TOKEN nor "
                                         "MODELHOUSE_ADMIN_TOKENS is set")
    if credentials is None:
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <admin token>'",
                       headers={"WWW-Authenticate": "Bearer"})
    sent = credentials.credentials.encode()
    # every token compared, in constant time each: how long this takes says nothing about which matched
    matches = [identity for identity, token in identities.items() if secrets.compare_digest(sent, token.encode())]
    if not matches:
        raise ApiError(403, "forbidden", "the admin token is not valid")
    return matches[0]


AdminDep = Annotated[str, Depends(require_admin)]
