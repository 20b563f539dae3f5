"""The service's one settings object, read from `MODELHOUSE_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.registry import DEFAULT_ROOT


class Settings(BaseSettings):
    """Every knob of the service. Build one (from the environment by default) and pass it to `create_app`."""

    model_config = SettingsConfigDict(env_prefix="MODELHOUSE_", env_file=None, extra="ignore")

    store_dir: Path = Field(DEFAULT_ROOT, description="registry root (models/store in the repo)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where networks run")
    admin_token: SecretStr | None = Field(None, description="bearer token for mutating endpoints; unset disables them")
    max_request_bytes: int = Field(10 * 1024 * 1024, gt=0, description="per-request upload limit, enforced while reading")
    max_image_pixels: int = Field(40_000_000, gt=0, description="decompression-bomb guard, checked from the header")
    max_files_per_request: int = Field(64, gt=0)
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per inference call")
    inference_workers: int = Field(1, ge=1, description="concurrent inference calls (1 measured best on 2 cores)")
    max_loaded_models: int = Field(8, ge=1, description="LRU size of loaded versions (aliased ones are kept)")
    preload: bool = Field(True, description="load every task's production version at startup")
    log_level: str = Field("INFO")
