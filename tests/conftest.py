"""Shared fixtures: real MNIST digits, a private copy of the registry store, and app clients."""

from __future__ import annotations

import gc

import gzip
import io
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import Settings
from models.paths import data_dir
from bench.s3server import S3Server
from models.registry import DEFAULT_ROOT, ModelRegistry
from models.registry.synced import upload

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = data_dir("mnist")
IMAGENET_SAMPLES = data_dir("imagenet-samples")
COMPONENTS_DIR = data_dir("components")
ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    """Poll `url`/readyz until 200; fail the test if the server exits or the timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # not listening yet, or 503 while models load
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"server at {url} did not become ready (exit code {proc.poll()})")
        time.sleep(0.2)


def _read_idx(path: Path, header: int) -> np.ndarray:
    return np.frombuffer(gzip.decompress(path.read_bytes()), dtype=np.uint8, offset=header)


@pytest.fixture(scope="session")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The first 500 MNIST test digits (uint8 28x28) and their labels."""
    images = _read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:500]
    labels = _read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz", 8)[:500]
    return images, labels


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    """A copy of the committed store, whatever tasks it holds, so tests can register and promote freely (a few
    MB: imagenet and components versions hold no big files, their base weights come from a pip package)."""
    root = tmp_path / "store"
    shutil.copytree(DEFAULT_ROOT, root, ignore=shutil.ignore_patterns(".*"))
    return root


@pytest.fixture()
def registry(store: Path) -> ModelRegistry:
    return ModelRegistry(store)


@pytest.fixture()
def make_client(store: Path) -> Iterator[Callable[..., TestClient]]:
    """Factory of started clients (lifespan run, models preloaded) over the private store."""
    clients: list[TestClient] = []

    def factory(**overrides: object) -> TestClient:
        settings = Settings(**{"store_dir": store, "device": "cpu", "admin_token": ADMIN_TOKEN, **overrides})
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)
    gc.unfreeze()  # the app froze the heap after preloading (Settings.gc_freeze); let later tests' garbage go


@pytest.fixture()
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture()
def s3_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """A real S3 server (`rclone serve s3` on loopback) over a temporary directory, with bucket `models`;
    the AWS_* variables point every client of this test at it."""
    server = S3Server(tmp_path / "s3").start()
    server.bucket("models")
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    yield server
    server.stop()


@pytest.fixture()
def s3_store(s3_server: S3Server, registry: ModelRegistry) -> str:
    """The URL of an object store holding the committed digits task (one version, promoted)."""
    url = "s3://models/store"
    upload(registry, url, ["digits"])
    return url
