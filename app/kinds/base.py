"""The per-kind model contract: decode a request, predict a batch, encode the answer.

In the spirit of LitServe's `setup / decode_request / predict / encode_response`: a kind knows its
inputs and outputs, and nothing else; the server (`app.serving.server`) owns the request path around
it: body reading, version resolution, micro-batching, queue bounds, deadlines, metrics and errors.
A manifest's `kind` selects the class (`app.kinds.KINDS`), never the task's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel

from app.settings import Settings
from models.runtime import LoadedModel


class RequestGone(Exception):
    """The outcome of an item whose request was answered or went away before its work began."""


GONE = RequestGone("the request was answered before this item's work began")


@dataclass(frozen=True)
class PredictParams:
    """The query parameters of every prediction route (validated by FastAPI: `app.routes.predict`)."""

    version: str = "production"
    top_k: int | None = None
    debug: bool = False


@dataclass(frozen=True)
class RawRequest:
    """What the server hands a kind to decode: the body, its declared type and the query parameters."""

    body: bytes
    content_type: str | None
    params: PredictParams


@dataclass
class Decoded:
    """A decoded request: one batch item per input, the options `encode_response` needs, and the
    version the body asks for, when a kind's body can name one (None: the query's)."""

    items: list[Any]
    options: Any = None
    version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    input_bytes: int = 0  # size of the inputs as sent (images' bytes, tensors' data): what a decode may meet


class ModelKind(ABC):
    """One kind of model. Instances are stateless apart from the settings they were built with."""

    name: ClassVar[str]
    response_model: ClassVar[type[BaseModel]]
    default_backend: ClassVar[str] = "torch"  # on the CPU; any other device always runs torch

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    def decode_request(self, model: LoadedModel, request: RawRequest) -> Decoded:
        """Parse and check the request for `model` (on the event loop: keep it cheap). Raises `ApiError`
        or domain errors; a `RequestValidationError` for a body that does not fit the request schema."""

    @abstractmethod
    def predict(self, model: LoadedModel, items: list[Any], alive: Callable[[int], bool]) -> list[Any]:
        """Blocking, on an inference thread: one outcome per item, a result or the exception that failed
        only that item. Items of several requests arrive in one call (a micro-batch); an item whose
        `alive(index)` is False belongs to a request already answered (504) or gone: skip its work
        (its outcome is `GONE`), checking between items."""

    @abstractmethod
    def encode_response(self, model: LoadedModel, decoded: Decoded, outcomes: list[Any]) -> BaseModel:
        """The response for one request from its items' outcomes; raises for a failed item."""

    @abstractmethod
    def top_predictions(self, model: LoadedModel, decoded: Decoded, outcomes: list[Any],
                        k: int) -> list[list[tuple[str, float]]]:
        """Per input, its best `k` (label, probability), best first ([] for a failed item): what shadow
        traffic compares and the prediction log records, whatever the response looks like on the wire."""

    @abstractmethod
    def input_digest(self, item: Any) -> str:
        """The sha256 (hex) of one batch item's input as the client sent it (the prediction log's key)."""

    def prepared(self, model: LoadedModel, decoded: Decoded, outcomes: list[Any]) -> Decoded | None:
        """The request's inputs as `model` already prepared them, for another version with the same
        preprocessing (a shadow): it then skips the decoding. None: decode the request again."""
        return None

