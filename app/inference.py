"""Image classification for any registered image task: decode -> preprocess (per manifest) -> one forward pass.

Blocking code: the routes run it through `ModelService.run`, off the event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from models.imaging import ImageError
from models.preprocessing import image_to_array, to_tensor
from models.registry import LoadedModel

from app.uploads import Part


class FileError(Exception):
    """An image error tied to the file (by position and name) it came from."""

    def __init__(self, index: int, part: Part, error: ImageError) -> None:
        name = part.filename or f"part {index + 1}"
        super().__init__(f"file {index + 1} ({name}): {error}")
        self.error = error


@dataclass(frozen=True)
class Classified:
    probabilities: torch.Tensor  # N x classes
    seconds: float


def classify_parts(model: LoadedModel, parts: list[Part], *, max_pixels: int) -> Classified:
    """All files of one request as a single batch; raises `FileError` naming the first bad file."""
    started = time.perf_counter()
    arrays = []
    for index, part in enumerate(parts):
        try:
            arrays.append(image_to_array(part.data, model.preprocessing, max_pixels=max_pixels,
                                         declared_type=part.content_type))
        except ImageError as exc:
            raise FileError(index, part, exc) from exc
    batch = to_tensor(arrays, model.preprocessing)
    probabilities = model.predict_proba(batch)
    return Classified(probabilities, time.perf_counter() - started)
