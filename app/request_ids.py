"""Request ids: every response carries `X-Request-ID` (the client's when it sent a usable one), and
log records made while a request runs carry it as `request_id` (`app.middleware` sets both)."""

from __future__ import annotations

import contextvars
import itertools
import logging
import re
import uuid

from starlette.types import Scope

HEADER = b"x-request-id"
_USABLE = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")  # no spaces or control characters: safe to log and echo
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


# Generated ids: a random prefix per process and a counter, unique across workers and restarts without
# the cost of a random number per request.
_PREFIX = None
_counter = itertools.count(1)


def request_id_of(scope: Scope) -> str:
    """The client's X-Request-ID when usable, else a new one (32 hex digits)."""
    global _PREFIX
    for key, value in scope["headers"]:
        if key == HEADER and _USABLE.match(value):
            return value.decode("ascii")
    if _PREFIX is None:
        _PREFIX = uuid.uuid4().hex[:20]
    return f"{_PREFIX}{next(_counter):012x}"


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (install on handlers: `python -m app` does)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True


def configure_logging(level: str) -> None:
    """The service's own loggers (`app`, `models`) to stderr with the request id; uvicorn keeps its own.
    Called by the launcher (`python -m app` and each worker), never on import."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
