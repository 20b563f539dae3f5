"""Request and response bodies of the rollout routes (`app.routes.aliases`): canary, shadow, alias state."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from models.registry import MAX_NAME_LENGTH

VersionField = Field(min_length=1, max_length=MAX_NAME_LENGTH, description="the candidate version id",
                     examples=["20261201-101500-lenet5"])


class CanaryRequest(BaseModel):
    """Send `percent` of the alias's requests to `version`; roll back on its own past either threshold."""

    model_config = ConfigDict(extra="forbid")

    version: str = VersionField
    percent: float = Field(gt=0, lt=100, description="share of the alias's requests the candidate serves")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="share of the candidate's last `window` requests "
                                  "that may fail with a 5xx before it is rolled back")
    max_p99_ms: float = Field(1000.0, gt=0, description="p99 latency of the candidate's last `window` requests "
                              "past which it is rolled back")
    window: int = Field(200, ge=1, le=100_000, description="candidate requests the thresholds are judged over; "
                        "nothing is judged before the first `window`")
    force: bool = Field(False, description="start it even if the candidate's labels or input differ")


class ShadowRequest(BaseModel):
    """Also run `percent` of the alias's requests on `version`, off the response path; never serve it."""

    model_config = ConfigDict(extra="forbid")

    version: str = VersionField
    percent: float = Field(gt=0, le=100, description="share of the alias's requests repeated on the candidate")


class CanaryState(BaseModel):
    version: str
    percent: float
    max_error_rate: float
    max_p99_ms: float
    window: int
    started_at: str
    actor: str
    requests: int = Field(description="candidate requests this process served")
    errors: int = Field(description="of which failed with a 5xx")
    error_rate: float | None = Field(description="5xx share over the last `window` (None before any)")
    p99_ms: float | None = Field(description="p99 latency over the last `window`")
    window_filled: bool
    breach: str | None = Field(description="why this process rolled it back, if it did")


class ShadowState(BaseModel):
    version: str
    percent: float
    started_at: str
    actor: str
    requests: int = Field(description="shadow runs this process finished")
    compared: int = Field(description="inputs whose top-1 was compared with the served one")
    agreement: float | None = Field(description="share of compared inputs with the same top-1")
    errors: int
    drops: int = Field(description="shadow runs dropped because the shadow queue was full")
    p99_ms: float | None


class AliasState(BaseModel):
    """An alias's incumbent, with any canary and shadow and what the answering process counted of them."""

    task: str
    alias: str
    version: str = Field(description="the incumbent: the version the alias names")
    process: int = Field(description="pid of the worker process whose counts these are")
    canary: CanaryState | None
    shadow: ShadowState | None
