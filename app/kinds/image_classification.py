"""Kind "image-classification": uploaded image files in, top-k labels out.

The manifest's preprocessing preset says how an upload becomes the network's input (digit
normalisation, the ImageNet crop, ...), exactly as in training; `serving.default_top_k` and
`serving.max_top_k` bound `top_k`, and `unknown_threshold` (when calibrated) flags photos of none of
the known classes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from app.errors import ApiError, domain_status
from app.kinds.base import GONE, Decoded, ModelKind, RawRequest
from app.schemas import ClassificationResponse
from app.uploads import Part, file_parts, parse_multipart
from models.imaging import ImageError, UndecodableImageError, check_request_pixels
from models.preprocessing import image_to_array, to_tensor
from models.runtime import LoadedModel

log = logging.getLogger(__name__)
FILE_FIELD = "file"
OTHER_PARTS = 8  # multipart fields besides the files that a request may carry (and that are ignored)


@dataclass(frozen=True)
class ImageItem:
    """One uploaded file to classify."""

    data: bytes
    content_type: str | None


@dataclass(frozen=True)
class TensorItem:
    """One input the client preprocessed itself (`app.v2`): a CxHxW float32 array of the model's input
    size, normalised (mean and std applied); only the forward pass is left to do."""

    array: np.ndarray


@dataclass(frozen=True)
class Classified:
    """One item's class probabilities and the array the network saw (before mean/std)."""

    probabilities: torch.Tensor
    array: np.ndarray


@dataclass(frozen=True)
class ImageOptions:
    parts: list[Part]
    top_k: int
    debug: bool


def top_k_bounds(model: LoadedModel) -> tuple[int, int]:
    """(default, maximum) `top_k` of `model`: its manifest's serving block, else min(5, classes) and classes."""
    classes = len(model.labels)
    maximum = min(model.manifest.serving.max_top_k or classes, classes)
    return min(model.manifest.serving.default_top_k or 5, maximum), maximum


class ImageClassification(ModelKind):
    name = "image-classification"
    response_model = ClassificationResponse
    default_backend = "onnxruntime"  # no per-layer Python dispatch, GIL released; checked against torch at load

    def decode_request(self, model: LoadedModel, request: RawRequest) -> Decoded:
        max_files = self.settings.max_files_per_request
        parts = file_parts(parse_multipart(request.body, request.content_type, max_files + OTHER_PARTS), FILE_FIELD,
                           max_files)
        if len(parts) > 1:
            check_request_pixels([p.data for p in parts], self.settings.max_request_pixels)
        default, maximum = top_k_bounds(model)
        top_k = default if request.params.top_k is None else request.params.top_k
        if top_k > maximum:
            raise ApiError(422, "invalid_parameters", f"top_k: must be at most {maximum} for {model.task}")
        items = [ImageItem(p.data, p.content_type) for p in parts]
        return Decoded(items, ImageOptions(parts, top_k, request.params.debug),
                       input_bytes=sum(len(item.data) for item in items))

    def predict(self, model: LoadedModel, items: list[ImageItem | TensorItem],
                alive: Callable[[int], bool] = lambda _: True) -> list[Classified | Exception]:
        """Decode + preprocess every item, then ONE forward pass over the good ones. An unexpected
        exception while decoding one item becomes that item's `UndecodableImageError`: its batch
        mates, other clients' requests, are still answered. `TensorItem`s join the forward pass as they are."""
        outcomes: list[Any] = [None] * len(items)
        arrays, good, ready, ready_at = [], [], [], []
        for index, item in enumerate(items):
            if not alive(index):
                outcomes[index] = GONE
                continue
            if type(item) is TensorItem:
                ready.append(item.array)
                ready_at.append(index)
                continue
            try:
                arrays.append(image_to_array(item.data, model.preprocessing, max_pixels=self.settings.max_image_pixels,
                                             declared_type=item.content_type))
                good.append(index)
            except ImageError as exc:
                outcomes[index] = exc
            except Exception as exc:  # a decoder raising an unforeseen kind on odd bytes: this item's 400, logged
                log.exception("item %d of a %s batch: preprocessing raised %s", index, model.task, type(exc).__name__)
                outcomes[index] = UndecodableImageError(f"cannot decode the image ({type(exc).__name__}: {exc})")
        if arrays or ready:
            batches = [to_tensor(arrays, model.preprocessing)] if arrays else []
            if ready:
                batches.append(torch.from_numpy(np.stack(ready)))
            probabilities = model.predict_proba(batches[0] if len(batches) == 1 else torch.cat(batches))
            for row, array, index in zip(probabilities, arrays + ready, good + ready_at):
                outcomes[index] = Classified(row, array)
        return outcomes

    def encode_response(self, model: LoadedModel, decoded: Decoded, outcomes: list[Any]) -> ClassificationResponse:
        options: ImageOptions = decoded.options
        threshold, labels = model.manifest.unknown_threshold, model.labels
        predictions = []
        for index, (part, row) in enumerate(zip(options.parts, outcomes)):
            if isinstance(row, ImageError):
                status, code = domain_status(row) or (400, "undecodable_image")
                raise ApiError(status, code, f"file {index + 1} ({part.filename or 'unnamed'}): {row}")
            if isinstance(row, BaseException):  # the batch itself failed (a bug, logged by the batcher): a 500
                raise row
            values, indices = row.probabilities.topk(options.top_k)
            top = [{"label": labels[i], "index": i, "probability": round(p, 6)}
                   for p, i in zip(values.tolist(), indices.tolist())]
            predictions.append({
                "filename": part.filename, "label": top[0]["label"], "confidence": top[0]["probability"], "top": top,
                "unknown": None if threshold is None else float(values[0]) < threshold,
                "input_image": array_to_data_url(row.array) if options.debug else None})
        # Validated from plain dicts in pydantic-core: cheaper than `model_construct` of each nested model
        # (pure Python), and the answer is checked against its schema on every request.
        return ClassificationResponse.model_validate({"model": {"task": model.task, "version": model.version},
                                                      "predictions": predictions})

    def top_predictions(self, model: LoadedModel, decoded: Decoded, outcomes: list[Any],
                        k: int) -> list[list[tuple[str, float]]]:
        tops: list[list[tuple[str, float]]] = []
        for row in outcomes:
            if not isinstance(row, Classified):
                tops.append([])
                continue
            values, indices = row.probabilities.topk(min(k, len(model.labels)))
            tops.append([(model.labels[i], round(p, 6)) for p, i in zip(values.tolist(), indices.tolist())])
        return tops

    def prepared(self, model: LoadedModel, decoded: Decoded, outcomes: list[Any]) -> Decoded | None:
        if not outcomes or not all(isinstance(row, Classified) for row in outcomes):
            return None
        tensor = to_tensor([row.array for row in outcomes], model.preprocessing).numpy()
        return Decoded([TensorItem(array) for array in tensor], input_bytes=tensor.nbytes)

    def input_digest(self, item: ImageItem | TensorItem) -> str:
        data = item.data if isinstance(item, ImageItem) else np.ascontiguousarray(item.array).tobytes()
        return hashlib.sha256(data).hexdigest()


def array_to_data_url(array: np.ndarray) -> str:
    """An HxW or HxWx3 array in [0, 1] as a PNG data URL (what `?debug=true` returns)."""
    image = Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
