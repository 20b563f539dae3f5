"""What the deployment tests check the files against: the image (Dockerfile), the app's routes and
settings, and a missing tool's treatment (skipped on a developer machine, failed in CI)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from app.routes.health import router as health_router
from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUSTOMIZATIONS = {"base": K8S / "base", "rwx-volume": K8S / "overlays" / "rwx-volume"}
KUBERNETES_VERSION = "1.30.0"  # the schemas kubernetes-validate ships for it (strict: unknown fields fail)
COMPOSE_FILE = REPO / "docker-compose.yml"
NGINX_CONF = REPO / "deploy" / "nginx" / "fleet.conf"
FLEET_REPLICAS = ("modelhouse-a", "modelhouse-b")
FLEET_LB = "modelhouse-lb"
ENV_PREFIX = Settings.model_config["env_prefix"]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def missing(message: str) -> None:
    """Skip on a developer machine, fail in CI (like the browser tests, tests/e2e/conftest.py)."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def dockerfile(pattern: str) -> str:
    match = re.search(pattern, DOCKERFILE, re.MULTILINE)
    assert match, f"Dockerfile: no match for {pattern!r}"
    return match.group(1)


IMAGE_PORT = int(dockerfile(r"^EXPOSE (\d+)"))
IMAGE_UID = int(dockerfile(r"^ARG APP_UID=(\d+)"))
IMAGE_GID = int(dockerfile(r"^ARG APP_GID=(\d+)"))
IMAGE_STORE = dockerfile(r"MODELHOUSE_STORE_DIR=(\S+)")
HEALTH_ROUTES = {route.path for route in health_router.routes if "GET" in getattr(route, "methods", ())}
