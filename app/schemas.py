"""Response (and request) schemas, one per direction, used as `response_model` everywhere."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.registry import MAX_NAME_LENGTH


class ErrorDetail(BaseModel):
    code: str = Field(examples=["undecodable_image"])
    message: str = Field(examples=["cannot decode the image: image file is truncated"])
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelRef(BaseModel):
    task: str = Field(examples=["digits"])
    version: str = Field(examples=["20261123-201500-lenet5"])


class TopEntry(BaseModel):
    label: str = Field(examples=["7"])
    index: int = Field(ge=0, description="class index in the model's label list", examples=[7])
    probability: float = Field(ge=0, le=1, examples=[0.998])


class Prediction(BaseModel):
    filename: str | None = Field(examples=["seven.png"])
    label: str = Field(examples=["7"])
    confidence: float = Field(ge=0, le=1, examples=[0.998])
    top: list[TopEntry]
    unknown: bool | None = Field(None, description="for models with a calibrated `unknown_threshold` in their "
                                 "manifest (components): confidence below it, so likely none of the known classes")
    input_image: str | None = Field(None, description="with ?debug=true: the image the network saw (after "
                                    "preprocessing), as a data:image/png;base64 URL")


class ClassificationResponse(BaseModel):
    model: ModelRef
    predictions: list[Prediction]


class VersionBrief(BaseModel):
    version: str
    kind: str = Field(examples=["image-classification"])
    created_at: str | None = None
    architecture: str | None = None
    parameters: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict, description="headline metrics (e.g. test_accuracy)")
    aliases: list[str] = Field(default_factory=list)


class TaskSummary(BaseModel):
    task: str = Field(examples=["digits"])
    kind: str | None = Field(None, description="the production version's kind", examples=["image-classification"])
    title: str | None = Field(None, description="the production version's title", examples=["Handwritten digits"])
    input: str | None = Field(None, description="the production version's preprocessing kind (what its inputs are)",
                              examples=["digit"])
    aliases: dict[str, str] = Field(examples=[{"production": "20261123-201500-lenet5"}])
    versions: list[str]


class ModelsIndex(BaseModel):
    tasks: list[TaskSummary]


class ReplicaView(BaseModel):
    """One worker process's heartbeat, as it concerns one task."""

    replica: str = Field(description="its id: MODELHOUSE_REPLICA_ID, or <hostname>-<pid>")
    host: str
    pid: int
    time: str = Field(description="when it last wrote its heartbeat")
    age_s: float
    stale: bool = Field(description="missed several heartbeats: stopped, hung or cut off from the store")
    aliases: dict[str, str] = Field(description="the task's aliases as this process resolves them")
    converged: bool = Field(description="its aliases are the store's")


class TaskDetail(BaseModel):
    task: str
    aliases: dict[str, str]
    versions: list[VersionBrief]
    replicas: list[ReplicaView] = Field(default_factory=list, description="every process sharing the store, "
                                        "from its heartbeat (MODELHOUSE_HEARTBEAT_S)")
    converged: bool = Field(True, description="every fresh replica serves the store's aliases")
    store: StoreView | None = Field(None, description="with an object store: this process's view of it")


class LayerRow(BaseModel):
    name: str = Field(examples=["features.0"])
    type: str = Field(examples=["Conv2d"])
    output_shape: list[int] | None = Field(examples=[[-1, 6, 28, 28]])
    parameters: int = Field(examples=[156])


class LayerSummary(BaseModel):
    input_shape: list[int]
    layers: list[LayerRow]
    total_parameters: int
    trainable_parameters: int


class VersionDetail(BaseModel):
    task: str
    version: str
    aliases: list[str]
    manifest: dict[str, Any]
    summary: LayerSummary


class PromoteResponse(BaseModel):
    task: str
    alias: str = Field(examples=["production"])
    version: str
    previous: str | None = Field(description="the version the alias pointed at before, if any")
    forced: bool = Field(False, description="promoted with ?force=true")
    overridden: list[str] = Field(default_factory=list, description="the gates' refusals a forced promotion "
                                  "went past (recorded in the history)")
    replicas_url: str = Field(description="where to watch every replica converge on it (GET /models/{task})")


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class StoreView(BaseModel):
    """This process's view of an object store (absent for a local directory)."""

    url: str = Field(examples=["s3://models/store"])
    degraded: bool = Field(description="the last poll could not reach the store: serving what this replica has")
    error: str | None = Field(None, description="why, while degraded")
    last_sync: str | None = Field(None, description="when a poll last reached the store (UTC)")
    aliases: dict[str, str] | None = Field(None, description="the store's aliases of this task, as last read")
    refused: dict[str, str] = Field(default_factory=dict, description="versions in the store this replica "
                                    "refuses to serve (a checksum or manifest that fails), and why")


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    store: str = Field("local", description="local (a directory), ok (an object store reached by the last poll) "
                       "or degraded (unreachable: serving what this replica has, still ready)")
    models: dict[str, str] = Field(description="task -> loaded production version, or the load error",
                                   examples=[{"digits": "20261123-201500-lenet5"}])
    backends: dict[str, str] = Field(default_factory=dict, description="task -> what runs it (torch or onnxruntime)",
                                     examples=[{"digits": "onnxruntime"}])


MIN_TEMPERATURE = 0.05
MAX_PREFIX = 32
MAX_LENGTH = 64


class CompletionRequest(BaseModel):
    """What to complete and how. Every field but `prefix` is optional."""

    # strict: JSON types as written (`"seed": false` or `"num_completions": "3"` is a 422, not a coercion)
    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"examples": [{"prefix": "hel", "num_completions": 3}]})

    prefix: str = Field(min_length=1, max_length=MAX_PREFIX,
                        description="the start of a word; normalised (Unicode NFKC, lowercase) as the model was trained")
    num_completions: int = Field(3, ge=1, le=20, description="how many words to return (greedy: always one)")
    max_length: int = Field(20, ge=2, le=MAX_LENGTH, description="longest completed word, prefix included")
    strategy: Literal["beam", "greedy", "sample"] = "beam"
    beam_width: int | None = Field(None, ge=1, le=32, description="beam only; default max(num_completions, 5)")
    temperature: float = Field(1.0, ge=MIN_TEMPERATURE, le=10.0, description="sample only: <1 sharper, >1 flatter; "
                               f"at least {MIN_TEMPERATURE} (below, the draw is greedy in all but name and "
                               "its arithmetic overflows)")
    top_k: int = Field(0, ge=0, le=256, description="sample only: draw from the k most likely characters (0: all)")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="sample only: makes the draw reproducible")
    version: str | None = Field(None, min_length=1, max_length=MAX_NAME_LENGTH,
                                description="version id or alias (e.g. seed); default: the `version` query "
                                            "parameter, which defaults to production")


class CompletionEntry(BaseModel):
    text: str = Field(examples=["hello"])
    probability: float = Field(ge=0, le=1, description="the model's P(word | prefix), not renormalised over the list",
                               examples=[0.41])
    ended: bool = Field(description="false when the word was cut at max_length instead of ended by the model")


class CompletionResponse(BaseModel):
    model: ModelRef
    prefix: str = Field(description="the prefix as the model read it (normalised)", examples=["hel"])
    completions: list[CompletionEntry]


class HistoryEvent(BaseModel):
    """One change to a task's aliases or rollouts (`models.registry.history`); event-specific details
    (`forced`, `overridden`, `percent`, `stats`, ...) follow the standard fields."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    time: str = Field(description="UTC, ISO-8601", examples=["2026-12-01T10:15:00.123+00:00"])
    event: str = Field(examples=["promote"], description="promote, rollback, canary_start, canary_end, "
                       "canary_rollback, canary_complete, shadow_start or shadow_end")
    task: str = Field(examples=["digits"])
    alias: str | None = Field(examples=["production"])
    from_: str | None = Field(alias="from", description="promote/rollback: the alias's version before; "
                              "canary/shadow: the incumbent")
    to: str | None = Field(description="promote/rollback: the alias's version after; canary/shadow: the candidate")
    reason: str = ""
    actor: str = Field(description="who made the change: an admin token's name or token:<sha256 prefix>, "
                       "cli:<user>, trainer:<name>, auto-rollback", examples=["alice"])


class HistoryResponse(BaseModel):
    task: str
    events: list[HistoryEvent] = Field(description="oldest first")
