"""Image classification for any registered image task, one micro-batch at a time.

`classify_batch` is the blocking per-batch function a `MicroBatcher` runs off the event loop:
decode + preprocess (per the manifest's preset) every item, then ONE forward pass over all
the good ones. A bad image fails only its own item.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.imaging import ImageError
from models.preprocessing import image_to_array, to_tensor
from models.registry import LoadedModel


@dataclass(frozen=True)
class ImageItem:
    """One uploaded file to classify."""

    data: bytes
    content_type: str | None


def classify_batch(model: LoadedModel, items: list[ImageItem], *, max_pixels: int) -> list[torch.Tensor | ImageError]:
    """Per item: its class-probability row, or the `ImageError` that made it unusable."""
    outcomes: list[torch.Tensor | ImageError] = []
    arrays, good = [], []
    for index, item in enumerate(items):
        try:
            arrays.append(image_to_array(item.data, model.preprocessing, max_pixels=max_pixels,
                                         declared_type=item.content_type))
            good.append(index)
            outcomes.append(None)  # type: ignore[arg-type]  # filled below
        except ImageError as exc:
            outcomes.append(exc)
    if arrays:
        probabilities = model.predict_proba(to_tensor(arrays, model.preprocessing))
        for row, index in zip(probabilities, good):
            outcomes[index] = row
    return outcomes
