"""`HeaderTimeoutProtocol`: uvicorn's httptools protocol with a deadline on each request's headers.

uvicorn times out idle keep-alive connections only after a first response: a connection that never sends a
request, or sends its headers a byte at a time, would hold a slot (and its buffers) for ever. Here the
clock starts when the connection opens or a request's first byte arrives, and the connection is closed
when the headers are not complete `timeout_s` later. A request whose headers arrive in one piece (nearly
all) costs a flag check, no timer. Bodies have their own deadline (`app.uploads`).
`python -m app` runs every worker with it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeaderTimeoutProtocol(HttpToolsProtocol):
    timeout_s: float = 10.0  # set per process by the launcher from `Settings.header_timeout_s`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_headers = False
        self._arm()  # until the first request's headers are in

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_headers:  # a request began in this data, its headers did not end: the clock runs
            self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
