"""Open Inference Protocol v2 tensors on the wire: the infer request in, the infer response out.

Contract (the protocol's REST specification plus Triton's binary tensor data extension):

- A request body is a JSON object, optionally followed by binary tensor data. With the
  `Inference-Header-Content-Length: n` header, the first `n` bytes are the JSON and the rest are the
  binary data of the inputs whose `parameters.binary_data_size` is set, concatenated in input order.
- Numeric data is little-endian, row-major; BOOL is one byte per element; a binary BYTES tensor is
  each element as a 4-byte little-endian length followed by its bytes. In JSON, `data` is a flat or
  nested row-major list (BYTES elements are strings).
- A response carries every requested output in JSON `data`, or, when asked (`binary_data_output` on
  the request, `binary_data` on an output), as binary data after the JSON, with its
  `binary_data_size` and the `Inference-Header-Content-Length` response header.

Every malformed request is an `ApiError` 400 naming what is wrong. Nothing here knows a model.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.errors import ApiError

# Datatype -> its numpy dtype (little-endian); BYTES is a list of `bytes` (binary) or `str` (JSON) elements.
NUMPY_TYPES: dict[str, np.dtype] = {name: np.dtype(code) for name, code in {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1", "INT16": "<i2",
    "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}.items()}
BYTES = "BYTES"
DATATYPES = (*NUMPY_TYPES, BYTES)
HEADER_LENGTH = b"inference-header-content-length"
LENGTH = struct.Struct("<I")
JSON_CONTENT = [(b"content-type", b"application/json")]


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def signature(datatype: str, shape: list[int] | tuple[int, ...]) -> str:
    """`FP32 [1,1,28,28]`: how a tensor's type is named in error messages."""
    return f"{datatype} [{','.join(str(d) for d in shape)}]"


@dataclass(frozen=True)
class InferInput:
    """One input tensor: `data` is a flat numpy array for numeric types, a flat list of elements for BYTES
    (`bytes` when sent as binary data, `str` when sent in JSON)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def signature(self) -> str:
        return signature(self.datatype, self.shape)


@dataclass(frozen=True)
class RequestedOutput:
    """One entry of the request's `outputs`: its name, whether it goes back as binary data, its classification count."""

    name: str
    binary: bool
    classification: int | None = None


@dataclass(frozen=True)
class InferRequest:
    """A parsed infer request. `outputs` is None when the request names none (every output is returned)."""

    id: str | None
    parameters: dict[str, Any]
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None
    binary_output: bool


@dataclass(frozen=True)
class OutputTensor:
    """One output: `data` a numpy array of `shape` (numeric types) or a flat list of `str`/`bytes` (BYTES)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any
    binary: bool = False


@dataclass(frozen=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str | None
    outputs: list[OutputTensor]


# ---- the request ----------------------------------------------------------------------------------
def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"{where}: must be a JSON object")
    return value


def _flatten(data: Any, out: list[Any]) -> list[Any]:
    if isinstance(data, list):
        for element in data:
            _flatten(element, out)
    else:
        out.append(data)
    return out


def _bytes_elements(raw: bytes, count: int, name: str) -> list[bytes]:
    """Split binary BYTES data into its `count` length-prefixed elements."""
    elements, offset, size = [], 0, len(raw)
    while offset < size:
        if offset + 4 > size:
            raise bad_request(f"input {name!r}: binary BYTES data ends inside an element's 4-byte length")
        (length,) = LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > size:
            raise bad_request(f"input {name!r}: a BYTES element of {length} bytes runs past the binary data")
        elements.append(raw[offset:offset + length])
        offset += length
    if len(elements) != count:
        raise bad_request(f"input {name!r}: {len(elements)} BYTES elements sent; its shape needs {count}")
    return elements


def _input(entry: Any, index: int, binary: memoryview, offset: int) -> tuple[InferInput, int]:
    """Parse the request's input `index`, taking its binary data from `binary` at `offset`."""
    if not isinstance(entry, dict):
        raise bad_request(f"inputs[{index}]: must be a JSON object")
    name, datatype, shape = entry.get("name"), entry.get("datatype"), entry.get("shape")
    if not isinstance(name, str) or not name:
        raise bad_request(f"inputs[{index}].name: a non-empty string is required")
    if datatype not in DATATYPES:
        raise bad_request(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise bad_request(f"input {name!r}: shape must be a list of non-negative integers")
    parameters = _object(entry.get("parameters"), f"input {name!r}: parameters")
    count = math.prod(shape)
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad_request(f"input {name!r}: parameters.binary_data_size must be a non-negative integer")
        if "data" in entry:
            raise bad_request(f"input {name!r}: has both data and parameters.binary_data_size")
        if offset + size > len(binary):
            raise bad_request(f"input {name!r}: binary_data_size {size} runs past the end of the body "
                              f"({len(binary) - offset} bytes of binary data left)")
        raw = bytes(binary[offset:offset + size])
        offset += size
        if datatype == BYTES:
            data: Any = _bytes_elements(raw, count, name)
        else:
            dtype = NUMPY_TYPES[datatype]
            if size != count * dtype.itemsize:
                raise bad_request(f"input {name!r}: {size} bytes of binary data; {signature(datatype, shape)} "
                                  f"needs {count * dtype.itemsize}")
            data = np.frombuffer(raw, dtype=dtype)
    else:
        if "data" not in entry:
            raise bad_request(f"input {name!r}: neither data nor parameters.binary_data_size")
        elements = _flatten(entry["data"], [])
        if len(elements) != count:
            raise bad_request(f"input {name!r}: {len(elements)} elements in data; {signature(datatype, shape)} "
                              f"needs {count}")
        if datatype == BYTES:
            if not all(isinstance(e, str) for e in elements):
                raise bad_request(f"input {name!r}: BYTES elements in JSON must be strings")
            data = elements
        else:
            try:
                data = np.asarray(elements, dtype=NUMPY_TYPES[datatype])
            except (TypeError, ValueError, OverflowError) as exc:
                raise bad_request(f"input {name!r}: data is not {datatype}: {exc}") from None
    return InferInput(name, datatype, tuple(shape), data, parameters), offset


def _output(entry: Any, index: int, default_binary: bool) -> RequestedOutput:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise bad_request(f"outputs[{index}]: must be a JSON object with a name")
    name = entry["name"]
    parameters = _object(entry.get("parameters"), f"output {name!r}: parameters")
    binary = parameters.get("binary_data", default_binary)
    if not isinstance(binary, bool):
        raise bad_request(f"output {name!r}: parameters.binary_data must be true or false")
    classification = parameters.get("classification")
    if classification is not None and (not isinstance(classification, int) or isinstance(classification, bool)
                                       or classification < 0):
        raise bad_request(f"output {name!r}: parameters.classification must be a non-negative integer")
    return RequestedOutput(name, binary, classification or None)


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse an infer request body; `header_length` is the `Inference-Header-Content-Length` header, if any."""
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise bad_request(f"Inference-Header-Content-Length {header_length!r} must be a byte count "
                              f"of at most the body's {len(body)} bytes")
        split = int(header_length)
        header, binary = body[:split], memoryview(body)[split:]
    try:
        document = json.loads(header)
    except (ValueError, UnicodeDecodeError) as exc:
        hint = "" if header_length is not None else " (binary tensor data needs the Inference-Header-Content-Length header)"
        raise bad_request(f"the request is not valid JSON: {exc}{hint}") from None
    if not isinstance(document, dict):
        raise bad_request("the request must be a JSON object")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad_request("id: must be a string")
    parameters = _object(document.get("parameters"), "parameters")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise bad_request("parameters.binary_data_output must be true or false")
    entries = document.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise bad_request("inputs: a non-empty list is required")
    inputs, offset = [], 0
    for index, entry in enumerate(entries):
        tensor, offset = _input(entry, index, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise bad_request(f"{len(binary) - offset} bytes of binary data follow the inputs' binary_data_size total")
    names = [tensor.name for tensor in inputs]
    if len(set(names)) != len(names):
        raise bad_request(f"inputs: names must be unique, got {names}")
    outputs = document.get("outputs")
    if outputs is not None and not isinstance(outputs, list):
        raise bad_request("outputs: must be a list")
    requested = None if outputs is None else [_output(o, i, binary_output) for i, o in enumerate(outputs)]
    return InferRequest(request_id, parameters, inputs, requested, binary_output)


# ---- the response ---------------------------------------------------------------------------------
def _encoded(element: str | bytes) -> bytes:
    return element.encode("utf-8") if isinstance(element, str) else element


def _binary(tensor: OutputTensor) -> bytes:
    if tensor.datatype == BYTES:
        return b"".join(LENGTH.pack(len(e)) + e for e in map(_encoded, tensor.data))
    return np.ascontiguousarray(tensor.data, dtype=NUMPY_TYPES[tensor.datatype]).tobytes()


def _json_data(tensor: OutputTensor) -> list[Any]:
    if tensor.datatype == BYTES:
        return [e if isinstance(e, str) else e.decode("utf-8", "replace") for e in tensor.data]
    return np.asarray(tensor.data).ravel().tolist()


def encode_infer_response(response: InferResponse) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The response headers and body of `response`: JSON, followed by the binary outputs if any."""
    outputs, blobs = [], []
    for tensor in response.outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if tensor.binary:
            blob = _binary(tensor)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(tensor)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        document["id"] = response.id
    document["outputs"] = outputs
    header = json.dumps(document, separators=(",", ":")).encode()
    if not blobs:
        return JSON_CONTENT, header
    headers = [(b"content-type", b"application/octet-stream"), (HEADER_LENGTH, str(len(header)).encode())]
    return headers, b"".join([header, *blobs])
