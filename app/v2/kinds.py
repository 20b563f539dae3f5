"""The Open Inference Protocol face of each model kind: its tensor signature, and the adapter that turns
v2 tensors into the kind's own batch items and the kind's outcomes back into v2 output tensors.

The kind (`app.kinds`) still does the work: its `predict` runs the items through the same micro-batcher
as every other route. An adapter only translates, on the event loop.

Image kinds (`image-classification`) take exactly one input:
- `image`: BYTES `[N]` or `[N,1]`, each element an encoded image file (PNG, JPEG, ...): raw bytes as
  binary tensor data, or base64 text in JSON (JSON strings cannot carry arbitrary bytes);
- `input`: FP32 `[N,C,H,W]` of the manifest's input size, already preprocessed and normalised the
  way the model was trained (mean and std applied).
They answer `probabilities` FP32 `[N,classes]`, `label` BYTES `[N]` (the top class) and, for models
with a calibrated `unknown_threshold`, `unknown` BOOL `[N]`. `probabilities` takes Triton's
classification extension: `"parameters": {"classification": k}` makes it BYTES `[N,k]` of
`"probability:index:label"`, most probable first.

Text kinds (`text-completion`) take `prefix` BYTES `[N]` or `[N,1]` (UTF-8 text); the request's
`parameters` are the other `app.schemas.CompletionRequest` fields (num_completions, strategy, ...).
They answer `completions` BYTES, `probabilities` FP32 and `ended` BOOL, each `[N,k]`: k the most
completions any prefix got; shorter rows are padded with "", 0 and false.
"""

from __future__ import annotations

import base64
import binascii
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from app.errors import ApiError, domain_status
from app.kinds import Decoded, ImageClassification, ModelKind, TextCompletion
from app.kinds.image_classification import ImageItem, TensorItem
from app.schemas import CompletionRequest
from app.v2.tensors import BYTES, InferInput, InferRequest, OutputTensor, RequestedOutput, bad_request, signature
from models.imaging import ImageError, check_request_pixels
from models.preprocessing import example_input
from models.registry import Manifest
from models.runtime import LoadedModel

# Request parameters that belong to the protocol or to Triton, never to a model.
PROTOCOL_PARAMETERS = frozenset({"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority",
                                 "timeout", "headers"})


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model's signature; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    note: str = ""  # what it holds, for error messages

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def __str__(self) -> str:
        return f"{self.name!r} {signature(self.datatype, self.shape)}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class V2Options:
    """What `encode` needs of the request: the outputs to return."""

    outputs: list[RequestedOutput]


def batch_of(tensor: InferInput, datatype: str) -> int | None:
    """N when `tensor` is `datatype` `[N]` or `[N,1]` with N >= 1, else None."""
    shape = tensor.shape
    if tensor.datatype != datatype or not shape or shape[0] < 1 or len(shape) > 2 or shape[1:] not in ((), (1,)):
        return None
    return shape[0]


class KindAdapter(ABC):
    """The v2 signature and translation of one kind."""

    classifiable: frozenset[str] = frozenset()  # outputs that take the classification extension

    @abstractmethod
    def inputs(self, manifest: Manifest) -> list[TensorSpec]: ...

    @abstractmethod
    def outputs(self, manifest: Manifest) -> list[TensorSpec]: ...

    @abstractmethod
    def decode(self, kind: ModelKind, model: LoadedModel, request: InferRequest) -> Decoded:
        """The kind's batch items for `request` (`Decoded.options` a `V2Options`); 400 naming the signature."""

    @abstractmethod
    def encode(self, model: LoadedModel, decoded: Decoded, outcomes: list[Any]) -> list[OutputTensor]:
        """The requested output tensors from the items' outcomes; raises for a failed item."""

    def one_input(self, model: LoadedModel, request: InferRequest) -> InferInput:
        if len(request.inputs) != 1:
            raise self.wrong_signature(model, f"{len(request.inputs)} inputs")
        return request.inputs[0]

    def wrong_signature(self, model: LoadedModel, got: str) -> ApiError:
        expected = " or ".join(str(spec) for spec in self.inputs(model.manifest))
        return bad_request(f"{model.task} takes one input, {expected}; got {got}")

    def requested(self, model: LoadedModel, request: InferRequest) -> list[RequestedOutput]:
        """The outputs to return (all of them when the request names none); 400 for an unknown one."""
        specs = self.outputs(model.manifest)
        if request.outputs is None:
            return [RequestedOutput(spec.name, request.binary_output) for spec in specs]
        names = {spec.name for spec in specs}
        for output in request.outputs:
            if output.name not in names:
                raise bad_request(f"output {output.name!r}: {model.task} has outputs "
                                  f"{', '.join(str(spec) for spec in specs)}")
            if output.classification and output.name not in self.classifiable:
                raise bad_request(f"output {output.name!r}: the classification extension applies to "
                                  f"{', '.join(sorted(self.classifiable)) or 'no output of this model'}")
        return request.outputs


class ImageAdapter(KindAdapter):
    IMAGE, INPUT = "image", "input"
    PROBABILITIES, LABEL, UNKNOWN = "probabilities", "label", "unknown"
    classifiable = frozenset({PROBABILITIES})

    def inputs(self, manifest: Manifest) -> list[TensorSpec]:
        return [TensorSpec(self.IMAGE, BYTES, (-1,), "encoded image files, shape [N] or [N,1]"),
                TensorSpec(self.INPUT, "FP32", (-1, *example_input(manifest.preprocessing).shape[1:]),
                           "preprocessed and normalised")]

    def outputs(self, manifest: Manifest) -> list[TensorSpec]:
        specs = [TensorSpec(self.PROBABILITIES, "FP32", (-1, manifest.num_classes)), TensorSpec(self.LABEL, BYTES, (-1,))]
        if manifest.unknown_threshold is not None:
            specs.append(TensorSpec(self.UNKNOWN, "BOOL", (-1,)))
        return specs

    def decode(self, kind: ModelKind, model: LoadedModel, request: InferRequest) -> Decoded:
        tensor = self.one_input(model, request)
        settings = kind.settings
        image = tensor.name == self.IMAGE and batch_of(tensor, BYTES) is not None
        if not image and not self._preprocessed(model, tensor):
            raise self.wrong_signature(model, f"{tensor.name!r} {tensor.signature}")
        if tensor.shape[0] > settings.max_files_per_request:
            raise bad_request(f"input {tensor.name!r}: {tensor.shape[0]} items; at most {settings.max_files_per_request} "
                              "per request (MODELHOUSE_MAX_FILES_PER_REQUEST)")
        items: list[Any]
        if image:
            files = [self._file(element, index) for index, element in enumerate(tensor.data)]
            if len(files) > 1:
                check_request_pixels(files, settings.max_request_pixels)
            items, size = [ImageItem(data, None) for data in files], sum(len(data) for data in files)
        else:
            batch = tensor.data.reshape(tensor.shape)
            if not np.isfinite(batch).all():
                raise bad_request(f"input {self.INPUT!r}: holds NaN or infinite values")
            items, size = [TensorItem(array) for array in batch], batch.nbytes
        return Decoded(items, V2Options(self.requested(model, request)), input_bytes=size)

    def _preprocessed(self, model: LoadedModel, tensor: InferInput) -> bool:
        """Whether `tensor` is `input` FP32 [N,C,H,W] of the model's input size."""
        shape, expected = tensor.shape, self.inputs(model.manifest)[1].shape
        return (tensor.name == self.INPUT and tensor.datatype == "FP32" and len(shape) == len(expected)
                and shape[0] >= 1 and shape[1:] == expected[1:])

    @classmethod
    def _file(cls, element: bytes | str, index: int) -> bytes:
        if isinstance(element, bytes):
            return element
        try:
            return base64.b64decode(element, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(f"input {cls.IMAGE!r}, element {index}: in JSON, each image file must be its "
                              "base64 text (or send the tensor as binary data)") from None

    def encode(self, model: LoadedModel, decoded: Decoded, outcomes: list[Any]) -> list[OutputTensor]:
        for index, row in enumerate(outcomes):
            if isinstance(row, ImageError):
                status, code = domain_status(row) or (400, "undecodable_image")
                raise ApiError(status, code, f"image {index}: {row}")
            if isinstance(row, BaseException):  # the batch itself failed (a bug, logged by the batcher): a 500
                raise row
        probabilities = torch.stack([row.probabilities for row in outcomes])
        labels, n = model.labels, len(outcomes)
        tensors = []
        for output in decoded.options.outputs:
            if output.name == self.PROBABILITIES and output.classification:
                k = min(output.classification, len(labels))
                values, indices = probabilities.topk(k, dim=1)
                entries = [f"{p:f}:{i}:{labels[i]}" for p, i in zip(values.flatten().tolist(), indices.flatten().tolist())]
                tensors.append(OutputTensor(output.name, BYTES, (n, k), entries, output.binary))
            elif output.name == self.PROBABILITIES:
                tensors.append(OutputTensor(output.name, "FP32", (n, len(labels)), probabilities.numpy(), output.binary))
            elif output.name == self.LABEL:
                top = [labels[i] for i in probabilities.argmax(dim=1).tolist()]
                tensors.append(OutputTensor(output.name, BYTES, (n,), top, output.binary))
            else:  # UNKNOWN
                flagged = probabilities.max(dim=1).values.numpy() < model.manifest.unknown_threshold
                tensors.append(OutputTensor(output.name, "BOOL", (n,), flagged, output.binary))
        return tensors


class TextAdapter(KindAdapter):
    PREFIX = "prefix"
    COMPLETIONS, PROBABILITIES, ENDED = "completions", "probabilities", "ended"

    def inputs(self, manifest: Manifest) -> list[TensorSpec]:
        return [TensorSpec(self.PREFIX, BYTES, (-1,), "UTF-8 text, shape [N] or [N,1]")]

    def outputs(self, manifest: Manifest) -> list[TensorSpec]:
        return [TensorSpec(self.COMPLETIONS, BYTES, (-1, -1)), TensorSpec(self.PROBABILITIES, "FP32", (-1, -1)),
                TensorSpec(self.ENDED, "BOOL", (-1, -1))]

    def decode(self, kind: ModelKind, model: LoadedModel, request: InferRequest) -> Decoded:
        tensor = self.one_input(model, request)
        if tensor.name != self.PREFIX or batch_of(tensor, BYTES) is None:
            raise self.wrong_signature(model, f"{tensor.name!r} {tensor.signature}")
        if len(tensor.data) > kind.settings.max_files_per_request:
            raise bad_request(f"input {self.PREFIX!r}: {len(tensor.data)} prefixes; at most "
                              f"{kind.settings.max_files_per_request} per request (MODELHOUSE_MAX_FILES_PER_REQUEST)")
        options = {key: value for key, value in request.parameters.items()
                   if key not in PROTOCOL_PARAMETERS and not key.startswith("triton_")}
        for key in ("prefix", "version"):
            if key in options:
                raise bad_request(f"parameters.{key}: the {'input tensor' if key == 'prefix' else 'URL'} gives it")
        items = []
        for index, element in enumerate(tensor.data):
            try:
                prefix = element if isinstance(element, str) else element.decode("utf-8")
                body = CompletionRequest.model_validate({**options, "prefix": prefix})
            except UnicodeDecodeError:
                raise bad_request(f"input {self.PREFIX!r}, element {index}: not UTF-8 text") from None
            except ValidationError as exc:
                problems = "; ".join(f"{'parameters.' if e['loc'] != ('prefix',) else ''}"
                                     f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
                raise bad_request(f"element {index}: {problems}") from None
            TextCompletion._check(model, body)  # the kind's own checks: vocabulary, max_length
            items.append(body)
        return Decoded(items, V2Options(self.requested(model, request)))

    def encode(self, model: LoadedModel, decoded: Decoded, outcomes: list[Any]) -> list[OutputTensor]:
        for row in outcomes:
            if isinstance(row, BaseException):
                raise row
        n, k = len(outcomes), max(len(row) for row in outcomes)
        texts: list[str] = []
        probabilities = np.zeros((n, k), dtype=np.float32)
        ended = np.zeros((n, k), dtype=bool)
        for index, row in enumerate(outcomes):
            texts.extend([c.text for c in row] + [""] * (k - len(row)))
            probabilities[index, :len(row)] = [c.probability for c in row]
            ended[index, :len(row)] = [c.ended for c in row]
        values = {self.COMPLETIONS: (BYTES, texts), self.PROBABILITIES: ("FP32", probabilities), self.ENDED: ("BOOL", ended)}
        return [OutputTensor(o.name, values[o.name][0], (n, k), values[o.name][1], o.binary) for o in decoded.options.outputs]


ADAPTERS: dict[str, KindAdapter] = {ImageClassification.name: ImageAdapter(), TextCompletion.name: TextAdapter()}


def adapter_for(kind: str) -> KindAdapter:
    """The v2 adapter of manifest kind `kind` (every kind in `app.kinds.KINDS` has one)."""
    return ADAPTERS[kind]
