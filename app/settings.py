"""The service's one settings object, read from `MODELHOUSE_*` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.batching import POLICY_KEYS
from models.registry import DEFAULT_ROOT
from models.registry.synced import local_path


class Settings(BaseSettings):
    """Every knob of the service. Build one (from the environment by default) and pass it to `create_app`."""

    # hide_input_in_errors: a validation error would otherwise print the whole input, tokens included
    model_config = SettingsConfigDict(env_prefix="MODELHOUSE_", env_file=None, extra="ignore",
                                      hide_input_in_errors=True)

    store_dir: Path = Field(DEFAULT_ROOT, description="registry root (models/store in the repo)")
    store: str | None = Field(None, description="the registry as a URL, over store_dir: file:///path, or "
                              "s3://bucket[/prefix] (endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                              "AWS_SECRET_ACCESS_KEY), which every replica polls and serves from a verified mirror")
    cache_dir: Path | None = Field(None, description="with an s3:// store: the local mirror served from "
                                   "(default: $XDG_CACHE_HOME/modelhouse/stores/<hash of the URL>)")
    alias_poll_s: float = Field(2.0, gt=0, description="with an s3:// store: how often each process polls it "
                                "for moved aliases, new versions and new tasks")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where networks run")
    admin_token: SecretStr | None = Field(None, description="bearer token for mutating endpoints; unset (and no "
                                          "admin_tokens) disables them; the history names it token:<sha256 prefix>")
    admin_tokens: dict[str, SecretStr] = Field(
        default_factory=dict, description='named bearer tokens for mutating endpoints, JSON in the env, e.g. '
        '{"alice": "...", "ci": "..."}; the history records the name of the one used')
    promotion_tolerance: float = Field(0.0, ge=0, allow_inf_nan=False,
                                       description="how much worse (absolute, in the metric's units) a candidate's "
                                       "evaluation metric may be than the incumbent's and still be promoted")
    max_request_bytes: int = Field(10 * 1024 * 1024, gt=0, description="per-request body limit on every prediction "
                                   "route, enforced while reading")
    max_image_pixels: int = Field(40_000_000, gt=0, description="decompression-bomb guard, checked from the header")
    max_files_per_request: int = Field(64, gt=0, description="image files per request; the multipart parser "
                                       "stops (413) past this many parts plus a few other fields")
    max_request_pixels: int = Field(100_000_000, gt=0, description="pixels of all the images of one request "
                                    "together, checked from their headers before any is decoded (413)")
    body_timeout_s: float = Field(30.0, gt=0, description="the whole request body must arrive within this (408)")
    header_timeout_s: float = Field(10.0, gt=0, description="a connection whose request headers are not complete "
                                    "this long after it opened (or after the request's first byte) is closed")
    keep_alive_timeout_s: float = Field(5.0, gt=0, description="an idle keep-alive connection is closed after this")
    max_connections: int = Field(1000, ge=1, description="concurrent connections and requests per worker process; "
                                 "past it uvicorn answers 503 at once (its limit_concurrency)")
    workers: int = Field(max(1, os.cpu_count() or 1), ge=1,
                         description="worker processes of `python -m app` (one per core measured best on 2 cores)")
    torch_threads: int = Field(1, ge=1, description="intra-op threads per inference call (torch and onnxruntime)")
    inference_workers: int = Field(2, ge=1, description="inference threads per task (each task's requests have their own)")
    batch_max_size: int = Field(64, ge=1, description="largest micro-batch per forward pass")
    batch_max_wait_ms: float = Field(0.0, ge=0, description="extra wait for a small batch to grow (0: run at once; batches still form under load)")
    batch_inline_max_ms: float = Field(1.0, ge=0, description="a request alone in its worker process that finds its "
                                       "model idle runs on the event loop, not an inference thread, when the model's forward pass has "
                                       "been taking less than this per request (0: never)")
    batch_inline_max_bytes: int = Field(4096, ge=0, description="...and when its inputs (images or tensors, as "
                                        "sent) are at most this many bytes: the model's typical cost says nothing "
                                        "of one huge image, and a 4 KiB PNG inflates to at most ~4 megapixels")
    queue_max: int = Field(64, ge=1, description="queued items per model and worker process before answering 503")
    request_timeout_s: float = Field(10.0, gt=0, description="per-request inference deadline (504 after it)")
    shadow_queue_max: int = Field(64, ge=1, description="served requests waiting for their shadow run, per worker "
                                  "process; past it a shadow's share is dropped (and counted), never waited for")
    heartbeat_s: float = Field(5.0, gt=0, description="how often each worker process writes what it serves to "
                               "the store (`_replicas/<id>.json`, shown by GET /models/{task})")
    replica_id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$",
                                   description="this process's name in the heartbeats (default: <hostname>-<pid>)")
    shadow_time_share: float = Field(0.05, gt=0, le=1, description="at most this share of the time goes to shadow "
                                     "runs (per worker process: the shadow's thread sleeps in between)")
    batching: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='per-task overrides of the batch policy (max_batch_size, max_wait_ms, max_queue, concurrency, '
                    'inline_max_ms), '
                    'over the manifest\'s `serving` block; JSON in the env, e.g. {"imagenet": {"max_batch_size": 8}}')
    backends: dict[str, Literal["torch", "onnxruntime"]] = Field(
        default_factory=dict,
        description='per-task inference backend, over the manifest\'s `serving.backend` and the kind\'s default '
                    '(image classifiers: onnxruntime on the CPU; anything it cannot run is served with torch); '
                    'JSON in the env, e.g. {"digits": "torch"}')
    gil_switch_interval_ms: float = Field(
        1.0, gt=0, description="how long a Python thread may hold the GIL before another gets it (Python's "
        "default is 5 ms). The event loop and the inference threads share one GIL: with 5 ms, a loop waiting to "
        "parse the next request could wait a whole interval behind a decode (bench.ab measures it)")
    gc_freeze: bool = Field(True, description="after preloading, keep the loaded models out of the garbage "
                            "collector's full collections (gc.freeze): they stalled the event loop for up to 200 ms")
    telemetry: bool = Field(False, description="FastAPI's native OpenTelemetry (traces, metrics, logs through the "
                            "globally configured providers); off, /metrics (Prometheus) is the service's telemetry "
                            "and no request pays for the providers' checks")
    max_loaded_models: int = Field(8, ge=1, description="LRU size of loaded versions (aliased ones are kept)")
    preload: bool = Field(True, description="load every task's production version at startup")
    log_level: str = Field("INFO")
    prediction_log: Path | None = Field(None, description="JSON-lines log of sampled predictions; each worker "
                                        "process writes <path> with its pid before the suffix; unset: no log")
    prediction_log_sample_rate: float = Field(1.0, gt=0, le=1, description="fraction of requests logged")
    prediction_log_max_bytes: int = Field(100 * 1024 * 1024, gt=0, description="a worker's log file is rotated "
                                          "past this size")
    prediction_log_backups: int = Field(5, ge=1, description="rotated files kept per worker process")

    @field_validator("store")
    @classmethod
    def _store_is_a_valid_url(cls, value: str | None) -> str | None:
        if value is not None:
            local_path(value)  # InvalidStoreURLError (a ValueError) names the valid forms
        return value

    @field_validator("batching")
    @classmethod
    def _batching_keys_are_policy_keys(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for task, policy in value.items():
            unknown = sorted(set(policy) - set(POLICY_KEYS))
            if unknown:
                raise ValueError(f"batching[{task!r}]: unknown keys {unknown}; valid: {', '.join(POLICY_KEYS)}")
        return value

    @model_validator(mode="after")
    def _admin_tokens_are_distinct(self) -> Settings:
        """Each token names one caller: an empty token, or one shared by two names, is refused."""
        tokens = [token.get_secret_value() for token in self.admin_tokens.values()]
        if self.admin_token is not None and self.admin_token.get_secret_value():
            tokens.append(self.admin_token.get_secret_value())
        if any(not token for token in tokens) or any(not name for name in self.admin_tokens):
            raise ValueError("admin_tokens: every name and token must be non-empty")
        if len(set(tokens)) != len(tokens):
            raise ValueError("admin_tokens: each token must be distinct (and differ from admin_token), "
                             "or the history could not say who used it")
        return self

    @model_validator(mode="after")
    def _timeout_exceeds_batch_wait(self) -> Settings:
        if self.request_timeout_s * 1000 <= self.batch_max_wait_ms:
            raise ValueError("request_timeout_s must be longer than batch_max_wait_ms")
        return self
