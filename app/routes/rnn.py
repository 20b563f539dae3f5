"""`POST /rnn/complete`: word completion with a character-level language model (task `rnn`)."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.dependencies import MetricsDep, ServiceDep
from app.errors import ApiError
from app.schemas import ErrorResponse, ModelRef
from models.chars import CharCodec
from models.completion import Completion, complete

TASK = "rnn"
MAX_PREFIX = 32
MAX_LENGTH = 64
router = APIRouter(tags=["predict"])


class CompletionRequest(BaseModel):
    """What to complete and how. Every field but `prefix` is optional."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"prefix": "hel", "num_completions": 3}]})

    prefix: str = Field(min_length=1, max_length=MAX_PREFIX,
                        description="the start of a word; normalised (Unicode NFKC, lowercase) as the model was trained")
    num_completions: int = Field(3, ge=1, le=20, description="how many words to return (greedy: always one)")
    max_length: int = Field(20, ge=2, le=MAX_LENGTH, description="longest completed word, prefix included")
    strategy: Literal["beam", "greedy", "sample"] = "beam"
    beam_width: int | None = Field(None, ge=1, le=32, description="beam only; default max(num_completions, 5)")
    temperature: float = Field(1.0, gt=0.0, le=10.0, description="sample only: <1 sharper, >1 flatter")
    top_k: int = Field(0, ge=0, le=256, description="sample only: draw from the k most likely characters (0: all)")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="sample only: makes the draw reproducible")
    version: str = Field("production", min_length=1, max_length=80, description="version id or alias (e.g. seed)")


class CompletionEntry(BaseModel):
    text: str = Field(examples=["hello"])
    probability: float = Field(ge=0, le=1, description="the model's P(word | prefix), not renormalised over the list",
                               examples=[0.41])
    ended: bool = Field(description="false when the word was cut at max_length instead of ended by the model")


class CompletionResponse(BaseModel):
    model: ModelRef
    prefix: str = Field(description="the prefix as the model read it (normalised)", examples=["hel"])
    completions: list[CompletionEntry]


ERRORS = {
    404: {"model": ErrorResponse, "description": "unknown version or alias"},
    409: {"model": ErrorResponse, "description": "the version fails verification"},
    422: {"model": ErrorResponse, "description": "invalid field (named in the message), e.g. characters outside "
                                                 "the model's vocabulary in `prefix`"},
}


@router.post("/rnn/complete", response_model=CompletionResponse, responses=ERRORS,
             summary="Complete the start of a word")
async def complete_word(body: CompletionRequest, service: ServiceDep, metrics: MetricsDep) -> CompletionResponse:
    """The most probable whole words starting with `prefix`, ordered by probability. `version: "seed"` is the
    student report's three-word toy (h -> hello, g -> green, s -> start)."""
    started = time.perf_counter()
    model = await service.acquire(TASK, body.version)
    codec = CharCodec(model.preprocessing)
    prefix = codec.normalize(body.prefix)
    unknown = codec.unknown_characters(prefix)
    if unknown:
        raise ApiError(422, "invalid_parameters", f"prefix: characters not in the model's vocabulary: "
                       f"{', '.join(repr(c) for c in unknown)}; valid: {codec.alphabet!r}")
    if len(prefix) >= body.max_length:
        raise ApiError(422, "invalid_parameters", f"max_length: must exceed the prefix length ({len(prefix)})")

    def run() -> tuple[list[Completion], float]:
        begun = time.perf_counter()
        found = complete(model.network, codec, prefix, strategy=body.strategy, num_completions=body.num_completions,
                         max_length=body.max_length, beam_width=body.beam_width, temperature=body.temperature,
                         top_k=body.top_k, seed=body.seed)
        return found, time.perf_counter() - begun

    completions, seconds = await service.run(run)
    metrics.inference_latency.labels(TASK, model.version).observe(seconds)
    metrics.predictions.labels(TASK, model.version).inc()
    metrics.prediction_latency.labels(TASK, model.version).observe(time.perf_counter() - started)
    return CompletionResponse(
        model=ModelRef(task=TASK, version=model.version), prefix=prefix,
        completions=[CompletionEntry(text=c.text, probability=round(c.probability, 6), ended=c.ended)
                     for c in completions])
