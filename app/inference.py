"""Image classification for any registered image task, one micro-batch at a time.

`classify_batch` is the blocking per-batch function a `MicroBatcher` runs off the event loop:
decode + preprocess (per the manifest's preset) every item, then ONE forward pass over all
the good ones. A bad image fails only its own item.
"""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from models.imaging import ImageError, UndecodableImageError
from models.preprocessing import image_to_array, to_tensor
from models.registry import LoadedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageItem:
    """One uploaded file to classify."""

    data: bytes
    content_type: str | None


@dataclass(frozen=True)
class Classified:
    """One item's class probabilities and the array the network saw (before mean/std)."""

    probabilities: torch.Tensor
    array: np.ndarray


def classify_batch(model: LoadedModel, items: list[ImageItem], *, max_pixels: int) -> list[Classified | ImageError]:
    """Per item: its `Classified` outcome, or the `ImageError` that made it unusable (an unexpected
    exception while decoding one item becomes that item's `UndecodableImageError`: its batch mates,
    other clients' requests, are still answered)."""
    outcomes: list[Classified | ImageError] = []
    arrays, good = [], []
    for index, item in enumerate(items):
        try:
            arrays.append(image_to_array(item.data, model.preprocessing, max_pixels=max_pixels,
                                         declared_type=item.content_type))
            good.append(index)
            outcomes.append(None)  # type: ignore[arg-type]  # filled below
        except ImageError as exc:
            outcomes.append(exc)
        except Exception as exc:  # a decoder raising an unforeseen kind on odd bytes: this item's 400, logged
            log.exception("item %d of a %s batch: preprocessing raised %s", index, model.task, type(exc).__name__)
            outcomes.append(UndecodableImageError(f"cannot decode the image ({type(exc).__name__}: {exc})"))
    if arrays:
        probabilities = model.predict_proba(to_tensor(arrays, model.preprocessing))
        for row, array, index in zip(probabilities, arrays, good):
            outcomes[index] = Classified(row, array)
    return outcomes


def array_to_data_url(array: np.ndarray) -> str:
    """An HxW or HxWx3 array in [0, 1] as a PNG data URL (what `?debug=true` returns)."""
    image = Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
