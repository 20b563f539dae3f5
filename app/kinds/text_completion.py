"""Kind "text-completion": a JSON `CompletionRequest` in, the most probable whole words out.

The manifest's "chars" preset is the model's vocabulary (`models.chars`); decoding strategies are
`models.completion`'s. One request is one batch item: the batcher still bounds the queue and the
deadline, as for every kind.
"""

from __future__ import annotations

import hashlib

from collections.abc import Callable
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.errors import ApiError
from app.kinds.base import GONE, Decoded, ModelKind, RawRequest
from app.schemas import CompletionEntry, CompletionRequest, CompletionResponse, ModelRef
from models.chars import CharCodec
from models.completion import Completion, complete
from models.runtime import LoadedModel

JSON_TYPES = ("application/json",)


class TextCompletion(ModelKind):
    name = "text-completion"
    response_model = CompletionResponse
    request_model = CompletionRequest

    def decode_request(self, model: LoadedModel, request: RawRequest) -> Decoded:
        media_type = (request.content_type or "application/json").split(";", 1)[0].strip().lower()
        if media_type not in JSON_TYPES:
            raise ApiError(415, "unsupported_media_type", f"send application/json (a CompletionRequest) to {model.task}")
        if request.params.top_k is not None or request.params.debug:
            raise ApiError(422, "invalid_parameters", "top_k, debug: query parameters of image tasks; "
                           "a completion's options go in the JSON body")
        try:
            body = CompletionRequest.model_validate_json(request.body)
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
        self._check(model, body)
        return Decoded([body], version=body.version)

    @staticmethod
    def _check(model: LoadedModel, body: CompletionRequest) -> None:
        """422 naming the field when the model cannot complete `body.prefix`."""
        codec = CharCodec(model.preprocessing)
        prefix = codec.normalize(body.prefix)
        unknown = codec.unknown_characters(prefix)
        if unknown:
            raise ApiError(422, "invalid_parameters", f"prefix: characters not in the model's vocabulary: "
                           f"{', '.join(repr(c) for c in unknown)}; valid: {codec.alphabet!r}")
        if len(prefix) >= body.max_length:
            raise ApiError(422, "invalid_parameters", f"max_length: must exceed the prefix length ({len(prefix)})")

    def predict(self, model: LoadedModel, items: list[CompletionRequest],
                alive: Callable[[int], bool] = lambda _: True) -> list[list[Completion] | Exception]:
        codec = CharCodec(model.preprocessing)
        outcomes: list[Any] = []
        for index, body in enumerate(items):
            if not alive(index):
                outcomes.append(GONE)
                continue
            try:
                outcomes.append(complete(
                    model.network, codec, codec.normalize(body.prefix), strategy=body.strategy,
                    num_completions=body.num_completions, max_length=body.max_length, beam_width=body.beam_width,
                    temperature=body.temperature, top_k=body.top_k, seed=body.seed))
            except ValueError as exc:  # parameters the model cannot honour: this item's 422
                outcomes.append(ApiError(422, "invalid_parameters", str(exc)))
        return outcomes

    def encode_response(self, model: LoadedModel, decoded: Decoded, outcomes: list[Any]) -> CompletionResponse:
        (found,) = outcomes
        if isinstance(found, BaseException):
            raise found
        prefix = CharCodec(model.preprocessing).normalize(decoded.items[0].prefix)
        return CompletionResponse(
            model=ModelRef(task=model.task, version=model.version), prefix=prefix,
            completions=[CompletionEntry(text=c.text, probability=round(c.probability, 6), ended=c.ended)
                         for c in found])

    def top_predictions(self, model: LoadedModel, decoded: Decoded, outcomes: list[Any],
                        k: int) -> list[list[tuple[str, float]]]:
        return [[] if isinstance(found, BaseException) else [(c.text, round(c.probability, 6)) for c in found[:k]]
                for found in outcomes]

    def input_digest(self, item: CompletionRequest) -> str:
        return hashlib.sha256(item.model_dump_json().encode()).hexdigest()

