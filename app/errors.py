"""The error model: every failure is `{"error": {"code", "message"}}` with a fitting status (on the Open
Inference Protocol's routes, `/v2`, the same status with the protocol's `{"error": "message"}`).

Domain errors from `models` are mapped to HTTP here, in one table; one whose class has a `details` dict
(a refused promotion's reasons) carries it as `error.details`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from models.imaging import ImageAspectError, ImageTooLargeError, UndecodableImageError, UnsupportedImageTypeError
from models.networks import UnknownArchitectureError
from models.registry import (
    ChecksumMismatchError,
    InvalidManifestError,
    InvalidRolloutError,
    InvalidVersionIdError,
    PromotionRefusedError,
    StoreConflictError,
    StoreUnavailableError,
    UnknownTaskError,
    UnknownVersionError,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error raised by the service itself, with its status, code and optional headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


# domain error -> (status, code)
DOMAIN_ERRORS: dict[type[Exception], tuple[int, str]] = {
    UnknownTaskError: (404, "unknown_task"),
    UnknownVersionError: (404, "unknown_version"),
    InvalidVersionIdError: (404, "unknown_version"),
    ChecksumMismatchError: (409, "checksum_mismatch"),
    PromotionRefusedError: (409, "promotion_refused"),
    InvalidRolloutError: (422, "invalid_rollout"),
    InvalidManifestError: (409, "invalid_model"),
    UnknownArchitectureError: (409, "invalid_model"),
    UnsupportedImageTypeError: (415, "unsupported_media_type"),
    UndecodableImageError: (400, "undecodable_image"),
    ImageTooLargeError: (413, "image_too_large"),
    ImageAspectError: (422, "unsupported_aspect_ratio"),
    StoreUnavailableError: (503, "store_unavailable"),
    StoreConflictError: (409, "store_conflict"),
}


def domain_status(exc: Exception) -> tuple[int, str] | None:
    """(status, code) for a domain error or any subclass of one (nearest class wins), else None."""
    for cls in type(exc).__mro__:
        if cls in DOMAIN_ERRORS:
            return DOMAIN_ERRORS[cls]
    return None


HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
              413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_parameters", 503: "unavailable"}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request'}: {err.get('msg')}")
    return "; ".join(parts)


def error_parts(exc: Exception, method: str = "", path: str = "") -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """(status, JSON body, headers) of the answer to `exc`: the one mapping of exceptions to HTTP, for every route."""
    if isinstance(exc, ApiError):
        return exc.status, error_body(exc.code, exc.message), exc.headers
    if isinstance(exc, RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        return 422, error_body("invalid_parameters", _validation_message(errors), errors), None
    if isinstance(exc, StarletteHTTPException):
        code = HTTP_CODES.get(exc.status_code, "error")
        return exc.status_code, error_body(code, str(exc.detail)), exc.headers
    mapped = domain_status(exc)
    if mapped is not None:
        details = getattr(exc, "details", None)
        return mapped[0], error_body(mapped[1], str(exc), details if isinstance(details, dict) else None), None
    log.exception("unhandled error on %s %s", method, path, exc_info=exc)
    return 500, error_body("internal_error", "internal server error"), None


def error_response(exc: Exception, method: str = "", path: str = "") -> JSONResponse:
    """The JSON error answer for `exc` (`error_parts`)."""
    status, body, headers = error_parts(exc, method, path)
    return JSONResponse(body, status_code=status, headers=headers)


def oip_error_response(exc: Exception, method: str = "", path: str = "") -> JSONResponse:
    """The same answer in the Open Inference Protocol's shape, `{"error": "message"}` (the `/v2` routes)."""
    status, body, headers = error_parts(exc, method, path)
    return JSONResponse({"error": body["error"]["message"]}, status_code=status, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app takes at this path: Starlette's 405 names only the first
    route's, and a path can have several (POST and DELETE of a canary)."""
    methods: set[str] = set()
    routes = list(request.app.router.routes)
    while routes:
        route = routes.pop()
        included = getattr(route, "original_router", None)  # FastAPI keeps an included router's routes there
        if included is not None:
            routes.extend(included.routes)
            continue
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception FastAPI's handlers see through `error_response`."""

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, StarletteHTTPException) and exc.status_code == 405:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return error_response(exc, request.method, request.url.path)

    for error_type in (ApiError, RequestValidationError, StarletteHTTPException, *DOMAIN_ERRORS, Exception):
        app.add_exception_handler(error_type, handler)
