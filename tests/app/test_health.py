"""Liveness, readiness, metrics and the OpenAPI description."""

from __future__ import annotations

import asyncio
import gc
import sys
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.main import create_app
from app.settings import Settings
from tests.conftest import png_bytes


def wait_ready(client: TestClient, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/readyz")
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_503_until_models_are_loaded(store):
    app = create_app(Settings(store_dir=store, device="cpu"))
    cold = TestClient(app)  # lifespan not started: nothing preloaded yet
    response = cold.get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "loading"
    with TestClient(app) as started:
        ready = wait_ready(started)
        assert ready.status_code == 200
        assert ready.json()["models"]["digits"] == app.state.server.registry.resolve("digits")
        assert ready.json()["backends"] == {"digits": "onnxruntime", "imagenet": "onnxruntime", "cifar10": "onnxruntime",
                                            "components": "onnxruntime", "rnn": "torch"}


def test_a_backend_that_cannot_run_falls_back_to_torch(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the package were not installed
    with TestClient(create_app(Settings(store_dir=store, device="cpu"))) as started:
        ready = wait_ready(started)
        assert ready.status_code == 200 and ready.json()["backends"]["digits"] == "torch"


def test_the_preloaded_heap_is_frozen_out_of_the_garbage_collector(make_client):
    gc.unfreeze()
    client = make_client(gc_freeze=True)
    assert wait_ready(client).status_code == 200
    deadline = time.monotonic() + 30
    while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # the freeze follows the preload, on the same background thread
    assert gc.get_freeze_count() > 100_000  # modules, networks, sessions: never walked by a full collection


def test_the_gil_switch_interval_follows_the_setting(make_client):
    default = sys.getswitchinterval()
    try:
        make_client(gil_switch_interval_ms=2.5)
        assert sys.getswitchinterval() == pytest.approx(0.0025)
    finally:
        sys.setswitchinterval(default)


def test_an_unknown_backend_is_a_settings_error_naming_the_choices():
    with pytest.raises(ValidationError, match="'torch' or 'onnxruntime'"):
        Settings(backends={"digits": "tensorrt"})


def test_readyz_503_when_production_model_is_corrupt(store, registry):
    (registry.version_dir("digits") / "weights.safetensors").write_bytes(b"corrupt")
    with TestClient(create_app(Settings(store_dir=store, device="cpu"))) as client:
        deadline = time.monotonic() + 30
        while "digits" not in (response := client.get("/readyz")).json()["models"] and time.monotonic() < deadline:
            time.sleep(0.05)  # preloading the other tasks
        assert response.status_code == 503
        assert "sha256" in response.json()["models"]["digits"]
        assert client.get("/healthz").status_code == 200


def test_metrics_count_requests_per_route_and_model_version(client, registry, mnist_test):
    client.post("/digits", files=[("file", ("d.png", png_bytes(mnist_test[0][0]), "image/png"))])
    client.post("/digits", params={"top_k": 0}, files=[("file", ("d.png", b"x", "image/png"))])
    text = client.get("/metrics").text
    version = registry.resolve("digits")
    assert 'modelhouse_http_requests_total{method="POST",route="/digits",status="200"} 1.0' in text
    assert 'modelhouse_http_requests_total{method="POST",route="/digits",status="422"} 1.0' in text
    assert f'modelhouse_predictions_total{{alias="production",task="digits",version="{version}"}} 1.0' in text
    assert "modelhouse_inference_duration_seconds_bucket" in text


def test_openapi_describes_every_endpoint(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/digits", "/models", "/models/{task}", "/models/{task}/{version}",
                 "/models/{task}/{version}/promote", "/healthz", "/readyz", "/metrics"):
        assert path in paths
    digits = paths["/digits"]["post"]
    assert "multipart/form-data" in digits["requestBody"]["content"]
    assert {"400", "413", "415", "422"} <= digits["responses"].keys()
    assert client.get("/docs").status_code == 200


def test_every_setting_is_documented():
    """docs/service.md states every limit and knob with its variable: a new setting without a line fails."""
    from pathlib import Path

    from app.settings import Settings

    docs = (Path(__file__).resolve().parents[2] / "docs" / "service.md").read_text()
    missing = [name for name in Settings.model_fields if f"MODELHOUSE_{name.upper()}" not in docs]
    assert not missing, missing


def test_a_closed_server_starts_no_more_loads(store):
    """A preload still running on its thread when the app shuts down stops at the next task, so a closed
    server's loads do not go on taking the cores."""
    server = create_app(Settings(store_dir=store, device="cpu", preload=False)).state.server
    asyncio.run(server.close())
    server.preload()
    assert not server.ready and server.cache.peek(("digits", server.registry.resolve("digits"))) is None
