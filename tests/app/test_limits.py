"""Limits that hold against hostile clients: each request is bounded in memory, time and parts; a 4xx
JSON error names the limit, and the service answers the next request at once."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import threading
import time

import pytest
from PIL import Image

from app.errors import ApiError
from app.uploads import read_body
from models.registry import ModelRegistry
from tests.app.test_digits import assert_error, files_of
from tests.conftest import IMAGENET_SAMPLES, png_bytes


def grey_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 200).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def probe(client, mnist_test, within_s: float = 1.0) -> None:
    """The service answers a normal request right after, within `within_s`."""
    started = time.monotonic()
    assert client.post("/digits", files=files_of(png_bytes(mnist_test[0][0]))).status_code == 200
    assert time.monotonic() - started < within_s


@pytest.mark.parametrize("path", ["/imagenet/top5", "/components", "/digits"])
def test_a_thin_strip_is_refused_naming_the_aspect_limit(client, mnist_test, path):
    strip = grey_png(4000, 1)  # 4000x1: resized to 256 px high it would be 1,024,000 px wide
    body = assert_error(client.post(path, files=files_of(strip)), 422, "unsupported_aspect_ratio")
    assert "20 times" in body["error"]["message"]
    probe(client, mnist_test)


def test_the_pixel_budget_is_per_request_not_per_file(make_client, mnist_test):
    client = make_client(max_request_pixels=50_000_000)
    big = grey_png(4000, 4000)  # 16 MP each, a few KB: within the per-file budget, 64 MP together
    body = assert_error(client.post("/digits", files=files_of(*[big] * 4)), 413, "image_too_large")
    assert "together" in body["error"]["message"] and "50000000" in body["error"]["message"]
    assert client.post("/digits", files=files_of(big, big)).status_code == 200  # 32 MP: within
    probe(client, mnist_test)


def test_items_of_an_answered_request_are_not_decoded(monkeypatch, mnist_test):
    """A request past its deadline (504) or gone: the decode loop skips its items."""
    import app.kinds.image_classification as kind_module
    from app.kinds.base import GONE
    from app.settings import Settings
    from models.runtime import load_model
    import torch

    decoded = []
    real = kind_module.image_to_array
    monkeypatch.setattr(kind_module, "image_to_array", lambda data, *a, **k: decoded.append(data) or real(data, *a, **k))
    model = load_model(ModelRegistry(), "digits", "production", torch.device("cpu"))
    items = [kind_module.ImageItem(png_bytes(mnist_test[0][i]), "image/png") for i in range(4)]
    outcomes = kind_module.ImageClassification(Settings()).predict(model, items, alive=lambda i: i % 2 == 0)
    assert outcomes[1] is GONE and outcomes[3] is GONE
    assert isinstance(outcomes[0], kind_module.Classified) and len(decoded) == 2


def test_a_body_that_never_arrives_is_a_408():
    async def stalled():
        await asyncio.sleep(3600)

    scope = {"headers": [(b"content-length", b"1000")]}
    started = time.monotonic()
    with pytest.raises(ApiError) as raised:
        asyncio.run(read_body(scope, stalled, limit=10_000, timeout_s=0.2))
    assert raised.value.status == 408 and time.monotonic() - started < 2


def test_a_huge_json_body_is_refused_before_it_is_read(client):
    body = json.dumps({"prefix": "a" * (50 * 1024 * 1024)}).encode()
    assert_error(client.post("/rnn/complete", content=body, headers={"content-type": "application/json"}),
                 413, "payload_too_large")


@pytest.mark.parametrize("body", [{"prefix": "he", "strategy": "sample", "temperature": 1e-40},
                                  {"prefix": "he", "strategy": "sample", "seed": False},
                                  {"prefix": "he", "num_completions": "3"}])
def test_completion_fields_are_strict_and_bounded(client, body):
    response = client.post("/rnn/complete", json=body)
    assert_error(response, 422, "invalid_parameters")
    assert client.post("/rnn/complete", json={"prefix": "he", "strategy": "sample", "temperature": 0.05,
                                              "seed": 1}).status_code == 200


def multipart(parts: int, closed: bool = True) -> tuple[bytes, dict[str, str]]:
    body = b"".join(b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n' for _ in range(parts))
    return body + (b"--b--\r\n" if closed else b""), {"content-type": "multipart/form-data; boundary=b"}


def test_a_body_of_many_tiny_parts_stops_at_the_part_limit(client, mnist_test):
    """The parser stops at the limit: a 5 MB body of 110,000 parts costs the event loop 72 of them."""
    from app.uploads import parse_multipart

    body, headers = multipart(110_000)
    assert_error(client.post("/digits", content=body, headers=headers), 422, "too_many_parts")
    with pytest.raises(ApiError, match="more than 72 parts"):
        parse_multipart(body, headers["content-type"], max_parts=72)
    probe(client, mnist_test)


def test_a_multipart_body_without_its_closing_boundary_is_a_400(client, mnist_test):
    payload = png_bytes(mnist_test[0][0])
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + payload + b"\r\n"
    body = assert_error(client.post("/digits", content=body, headers={"content-type": "multipart/form-data; boundary=b"}),
                        400, "bad_request")
    assert "closing boundary" in body["error"]["message"]


def test_query_parameters_have_one_parser(client, mnist_test):
    files = files_of(png_bytes(mnist_test[0][0]))
    for path in ("/digits", "/models/digits/predict"):
        assert_error(client.post(f"{path}?top_k=%D9%A3", files=files), 422, "invalid_parameters")  # Arabic-Indic 3


def test_registry_files_are_readable_by_another_user(tmp_path, store):
    from tests.models.test_registry import register_random

    old = os.umask(0o022)
    try:
        registry = ModelRegistry(tmp_path / "fresh")
        version, _ = register_random(registry)
        registry.promote("digits", version)
    finally:
        os.umask(old)
    directory = tmp_path / "fresh" / "digits"
    assert oct(directory.stat().st_mode & 0o777) == oct(0o755)
    assert oct((directory / version).stat().st_mode & 0o777) == oct(0o755)
    for path in [directory / "aliases.json", *(directory / version).iterdir()]:
        assert oct(path.stat().st_mode & 0o777) == oct(0o644), path


def test_staging_directories_are_never_versions_and_stale_ones_are_swept(client, store):
    registry = ModelRegistry(store)
    version = registry.resolve("digits")
    staging = store / "digits" / ".staging-crashed"
    shutil.copytree(store / "digits" / version, staging)
    os.utime(staging)  # copytree keeps the source's old mtime: this one is fresh (a registration in progress)
    assert client.get("/models/digits").status_code == 200
    assert ".staging-crashed" not in registry.versions("digits")
    registry.verify_version("digits", version)
    old = time.time() - 7200
    os.utime(staging, (old, old))
    registry.sweep_staging()
    assert not staging.exists()


def test_the_layer_summary_is_computed_once_per_version(client, monkeypatch):
    import app.serving.server as server_module

    calls = []
    real = server_module.layer_summary
    monkeypatch.setattr(server_module, "layer_summary", lambda *a: calls.append(1) or real(*a))
    for _ in range(16):
        assert client.get("/models/imagenet/production").status_code == 200
    assert len(calls) == 1


def test_a_slow_task_does_not_take_the_threads_of_a_fast_one(make_client, mnist_test, monkeypatch):
    """Each task has its own inference threads: with every ImageNet thread busy, digits still answer."""
    import app.kinds.image_classification as kind_module

    # one photo per batch, two batches at once: four requests hold both of ImageNet's threads
    client = make_client(batching={"imagenet": {"max_batch_size": 1, "concurrency": 2}}, inference_workers=2)
    gate, busy = threading.Event(), threading.Semaphore(0)
    real = kind_module.ImageClassification.predict

    def predict(self, model, items, alive=lambda _: True):
        if model.task == "imagenet":
            busy.release()
            gate.wait(30)
        return real(self, model, items, alive)

    probe(client, mnist_test, within_s=10)  # warm: the digits pool, batcher and session exist
    monkeypatch.setattr(kind_module.ImageClassification, "predict", predict)
    photo = IMAGENET_SAMPLES / "teapot.jpg"
    results = []
    senders = [threading.Thread(target=lambda: results.append(
        client.post("/imagenet/top5", files=[("file", ("t.jpg", photo.read_bytes(), "image/jpeg"))]).status_code))
        for _ in range(4)]
    for sender in senders:
        sender.start()
    try:
        assert busy.acquire(timeout=30) and busy.acquire(timeout=30)  # both ImageNet threads are held
        probe(client, mnist_test, within_s=10)  # with one shared pool it would wait for the gate (30 s)
    finally:
        gate.set()
        for sender in senders:
            sender.join(60)
    assert results == [200] * 4
