"""The manifest schema: everything needed to rebuild, serve and audit one registered version.

A manifest is validated when it is read (every load, verify and listing) and before it is written,
so a bad field fails with its name instead of a `KeyError` deep in serving. Its `kind` selects the
code that serves it; its `preprocessing` says how inputs become tensors, exactly as in training.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.registry.errors import InvalidManifestError
from models.tta import TTA_KEY, TTA_MODES

MAX_NAME_LENGTH = 80  # task, version, alias and artifact names
NAME_PATTERN = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}$")
SHA256 = r"^[0-9a-f]{64}$"
# What a kind serves, and the preprocessing kinds its inputs may use.
KIND_PREPROCESSING: dict[str, tuple[str, ...]] = {
    "image-classification": ("digit", "rgb"),
    "text-completion": ("chars",),
}
Kind = Literal["image-classification", "text-completion"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Architecture(_Strict):
    name: str = Field(min_length=1, description="a name in models.networks.ARCHITECTURES")
    args: dict[str, Any] = Field(default_factory=dict, description="its constructor arguments")


class WeightsFile(_Strict):
    file: str = Field(min_length=1)
    format: Literal["safetensors"] = "safetensors"
    sha256: str = Field(pattern=SHA256)


class Artifact(_Strict):
    sha256: str = Field(pattern=SHA256)


class BaseWeights(_Strict):
    """A third-party state dict shipped by an installed package (see `models.registry.base_weights`)."""

    package: str
    file: str
    sha256: str = Field(pattern=SHA256)
    format: Literal["torch-state-dict"] = "torch-state-dict"
    prefix: str = ""
    source: str | None = None


class Inference(_Strict):
    """Output-preserving rewrites of the serving module (`models.optimize`)."""

    fold_batchnorm: bool = False
    channels_last: bool = False


class Serving(_Strict):
    """How the version is served; every field is optional (the kind's defaults apply, settings override)."""

    backend: Literal["torch", "onnxruntime"] | None = None
    default_top_k: int | None = Field(None, ge=1)
    max_top_k: int | None = Field(None, ge=1)
    max_batch_size: int | None = Field(None, ge=1)
    max_wait_ms: float | None = Field(None, ge=0)
    max_queue: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1)

    def batch_overrides(self) -> dict[str, Any]:
        """The batch-policy fields this block sets."""
        keys = ("max_batch_size", "max_wait_ms", "max_queue", "concurrency")
        return {key: getattr(self, key) for key in keys if getattr(self, key) is not None}


class Evaluation(_Strict):
    """Which of `metrics` the promotion gate compares with the incumbent's (`models.registry.gates`)."""

    metric: str = Field(min_length=1, description="a key of `metrics` whose value is a number")
    higher_is_better: bool


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool): what a gate can compare."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Manifest(_Strict):
    """One registered version. Immutable; `model_dump(mode="json", exclude_none=True)` is what is stored."""

    schema_version: int = Field(ge=1)
    task: str = Field(pattern=NAME_PATTERN.pattern)
    version: str = Field(pattern=NAME_PATTERN.pattern)
    kind: Kind
    title: str | None = Field(None, max_length=120, description="what people call it, e.g. on the web page")
    architecture: Architecture
    parameters: int = Field(ge=0, description="parameters of the network served, trainable or not")
    labels: list[str] = Field(min_length=1)
    preprocessing: dict[str, Any]
    metrics: dict[str, Any]
    evaluation: Evaluation | None = None
    training: dict[str, Any]
    lineage: dict[str, Any]
    created_at: str
    weights: WeightsFile
    artifacts: dict[str, Artifact] = Field(default_factory=dict)
    base_weights: BaseWeights | None = None
    inference: Inference | None = None
    serving: Serving = Field(default_factory=Serving)
    unknown_threshold: float | None = Field(None, ge=0, le=1, description="confidence below which a prediction "
                                            "is flagged `unknown` (calibrated on validation photos)")

    @model_validator(mode="before")
    @classmethod
    def _kind_from_preprocessing(cls, data: Any) -> Any:
        """Manifests written before `kind` existed: a "chars" preset means text completion, any other a classifier."""
        if isinstance(data, dict) and "kind" not in data and isinstance(data.get("preprocessing"), dict):
            chars = data["preprocessing"].get("kind") == "chars"
            data = {**data, "kind": "text-completion" if chars else "image-classification"}
        return data

    @field_validator("artifacts")
    @classmethod
    def _artifact_names(cls, artifacts: dict[str, Artifact]) -> dict[str, Artifact]:
        bad = [name for name in artifacts if not NAME_PATTERN.match(name)]
        if bad:
            raise ValueError(f"artifact names must match {NAME_PATTERN.pattern}: {bad}")
        return artifacts

    @model_validator(mode="after")
    def _preprocessing_fits_kind(self) -> Manifest:
        valid = KIND_PREPROCESSING[self.kind]
        if self.preprocessing.get("kind") not in valid:
            raise ValueError(f"preprocessing.kind {self.preprocessing.get('kind')!r} does not fit kind {self.kind!r}; "
                             f"valid: {', '.join(valid)}")
        tta = self.preprocessing.get(TTA_KEY)
        if tta is not None and (self.kind != "image-classification" or tta not in TTA_MODES):
            raise ValueError(f"preprocessing.{TTA_KEY} {tta!r} is not a test-time augmentation of kind {self.kind!r}; "
                             f"valid: {', '.join(TTA_MODES) if self.kind == 'image-classification' else 'none'}")
        top = self.serving
        if top.default_top_k and top.max_top_k and top.default_top_k > top.max_top_k:
            raise ValueError("serving.default_top_k must not exceed serving.max_top_k")
        return self

    @model_validator(mode="after")
    def _evaluation_metric_is_recorded(self) -> Manifest:
        if self.evaluation is not None and not is_number(self.metrics.get(self.evaluation.metric)):
            numeric = ", ".join(sorted(k for k, v in self.metrics.items() if is_number(v))) or "none"
            raise ValueError(f"evaluation.metric {self.evaluation.metric!r} is not a number in metrics; "
                             f"numeric metrics: {numeric}")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def stored(self) -> dict[str, Any]:
        """The JSON object written to manifest.json."""
        return self.model_dump(mode="json", exclude_none=True)


def parse_manifest(payload: dict[str, Any], *, source: str = "manifest") -> Manifest:
    """Validate `payload`; `InvalidManifestError` names `source` and every bad field."""
    try:
        return Manifest.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'manifest'}: {err['msg']}"
                             for err in exc.errors())
        raise InvalidManifestError(f"{source}: invalid manifest: {problems}") from None
