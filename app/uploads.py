"""Reading request bodies: once, size-limited while they stream; multipart parsed in memory.

Parsing straight from bytes (python-multipart's callback parser) avoids the spooled
temporary files of `UploadFile`, which are the first throughput wall of a small-image service.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import Receive, Scope

from app.errors import ApiError


@dataclass
class Part:
    """One multipart part: its form field name, filename, declared type and bytes."""

    name: str = ""
    filename: str | None = None
    content_type: str | None = None
    chunks: list[bytes] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


async def read_body(scope: Scope, receive: Receive, limit: int, timeout_s: float) -> bytes:
    """The whole request body, read from the ASGI channel; 413 as soon as the declared or received size
    passes `limit` bytes, 400 when the client hangs up before the end, 408 when the whole body has not
    arrived within `timeout_s` (a slow or stalled upload holds no worker memory for longer). The one
    body reader of the service."""
    declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"request body is {int(declared)} bytes; the limit is {limit}")
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_chunks(receive, limit)
    except TimeoutError:
        raise ApiError(408, "request_timeout", f"the request body did not arrive within {timeout_s:g} s",
                       headers={"Connection": "close"}) from None


async def _read_chunks(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # Nobody will read an answer; a 400 is counted and logged, not a traceback.
            raise ApiError(400, "client_disconnected", "the client closed the connection before the body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lowercase bytes), decoded as latin-1."""
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == name), None)


def parse_multipart(body: bytes, content_type: str | None, max_parts: int) -> list[Part]:
    """Split a multipart/form-data body into parts: 415 for another content type, 400 if malformed or
    without its closing boundary, 413 past `max_parts` parts (parsing stops there, so a body of many
    tiny parts costs the event loop no more than `max_parts` of them)."""
    media_type, options = parse_options_header(content_type or "")
    if media_type != b"multipart/form-data":
        raise ApiError(415, "unsupported_media_type",
                       "send multipart/form-data with one or more image parts named 'file'")
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_request", "multipart/form-data without a boundary")
    parts: list[Part] = []
    header_field, header_value = bytearray(), bytearray()
    ended = False

    def on_part_begin() -> None:
        if len(parts) >= max_parts:
            raise ApiError(422, "too_many_parts", f"the multipart body has more than {max_parts} parts "
                           "(MODELHOUSE_MAX_FILES_PER_REQUEST files, plus a few other fields)")
        parts.append(Part())

    def on_end() -> None:
        nonlocal ended
        ended = True

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        name = bytes(header_field).lower()
        if name == b"content-disposition":
            _, params = parse_options_header(bytes(header_value))
            parts[-1].name = params.get(b"name", b"").decode("utf-8", "replace")
            filename = params.get(b"filename")
            parts[-1].filename = filename.decode("utf-8", "replace") if filename is not None else None
        elif name == b"content-type":
            parts[-1].content_type = bytes(header_value).decode("latin-1").strip()
        header_field.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].chunks.append(data[start:end])

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_part_data": on_part_data, "on_end": on_end,
    })
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise ApiError(400, "bad_request", f"malformed multipart body: {exc}") from exc
    if not ended:
        raise ApiError(400, "bad_request", "malformed multipart body: it ends before its closing boundary")
    return parts


def file_parts(parts: list[Part], field_name: str, max_files: int) -> list[Part]:
    """The parts named `field_name`; 422 when there are none or too many."""
    files = [p for p in parts if p.name == field_name]
    if not files:
        raise ApiError(422, "invalid_parameters", f"{field_name}: at least one multipart part named '{field_name}' is required")
    if len(files) > max_files:
        raise ApiError(422, "invalid_parameters", f"{field_name}: {len(files)} files sent; at most {max_files} per request")
    return files
