"""Model kinds: the code a manifest's `kind` selects (see `base.ModelKind`)."""

from app.kinds.base import Decoded, ModelKind, PredictParams, RawRequest
from app.kinds.image_classification import ImageClassification
from app.kinds.text_completion import TextCompletion

KINDS: dict[str, type[ModelKind]] = {kind.name: kind for kind in (ImageClassification, TextCompletion)}

__all__ = ["KINDS", "Decoded", "ImageClassification", "ModelKind", "PredictParams", "RawRequest", "TextCompletion"]
