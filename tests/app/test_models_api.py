"""The registry API: listing, inspection, artifacts, and promotion with its token checks."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import torch

from app.main import create_app
from app.settings import Settings
from models.registry import ModelRegistry
from models.runtime import load_model
from tests.conftest import ADMIN_TOKEN, png_bytes

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def register_shifted_copy(registry: ModelRegistry) -> str:
    """A second digits version whose answer is always (true digit + 1) % 10: easy to tell apart."""
    production = load_model(registry, "digits", "production", torch.device("cpu"))
    network = production.network
    last = network.classifier[-1]
    with torch.no_grad():
        last.weight.copy_(last.weight.roll(1, dims=0))
        last.bias.copy_(last.bias.roll(1, dims=0))
    keep = {"kind", "architecture", "labels", "preprocessing", "metrics", "training", "lineage", "serving"}
    return registry.register("digits", network, production.manifest.model_dump(include=keep), version="shifted-by-one")


def test_list_models(client, registry):
    body = client.get("/models").json()
    digits = next(t for t in body["tasks"] if t["task"] == "digits")
    assert digits["aliases"]["production"] in digits["versions"]
    assert [t["task"] for t in body["tasks"]] == registry.tasks() == ["cifar10", "components", "digits", "imagenet", "rnn"]


def test_show_task(client, registry):
    body = client.get("/models/digits").json()
    production = registry.resolve("digits")
    brief = next(v for v in body["versions"] if v["version"] == production)
    assert brief["aliases"] == ["production"] and brief["architecture"] == "lenet5"
    assert brief["metrics"]["test_accuracy"] >= 0.994 and brief["parameters"] == 61_706


def test_show_version_has_manifest_and_layer_summary(client):
    body = client.get("/models/digits/production").json()
    assert body["manifest"]["weights"]["sha256"]
    assert body["summary"]["total_parameters"] == 61_706
    assert body["summary"]["layers"][0]["output_shape"] == [-1, 6, 28, 28]


def test_404s(client):
    assert client.get("/models/speech").status_code == 404
    assert client.get("/models/digits/nope").json()["error"]["code"] == "unknown_version"
    assert client.get("/models/digits/..%2F..%2Fetc").status_code == 404
    assert client.get("/models/digits/production/artifacts/secret.txt").status_code == 404


def test_artifacts_are_served(client):
    response = client.get("/models/digits/production/artifacts/learning_curves.png")
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
    history = client.get("/models/digits/production/artifacts/history.json").json()
    assert history[0]["epoch"] == 1


def test_promote_403_when_no_token_is_configured(make_client):
    client = make_client(admin_token=None)
    response = client.post("/models/digits/production/promote", headers=AUTH)
    assert response.status_code == 403 and "disabled" in response.json()["error"]["message"]


def test_promote_401_without_bearer_and_403_with_a_wrong_one(client):
    missing = client.post("/models/digits/production/promote")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = client.post("/models/digits/production/promote", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"


def test_promote_switches_the_served_version_without_restart(client, registry, mnist_test):
    images, labels = mnist_test
    old = registry.resolve("digits")
    new = register_shifted_copy(registry)
    payload = [("file", ("d.png", png_bytes(images[0]), "image/png"))]
    assert client.post("/digits", files=payload).json()["predictions"][0]["label"] == str(labels[0])
    response = client.post(f"/models/digits/{new}/promote", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"task": "digits", "alias": "production", "version": new, "previous": old,
                               "forced": False, "overridden": [], "replicas_url": "/models/digits"}
    served = client.post("/digits", files=payload).json()
    assert served["model"]["version"] == new
    assert served["predictions"][0]["label"] == str((labels[0] + 1) % 10)
    assert json.loads((registry.task_dir("digits") / "aliases.json").read_text())["production"] == new


def test_a_promotion_made_outside_the_service_is_served_by_the_next_request(client, registry, mnist_test):
    """The CLI, a trainer or another worker process promotes by rewriting aliases.json on disk."""
    images, labels = mnist_test
    payload = [("file", ("d.png", png_bytes(images[0]), "image/png"))]
    old = client.post("/digits", files=payload).json()["model"]["version"]  # resolution now cached
    new = register_shifted_copy(registry)
    registry.promote("digits", new)
    served = client.post("/digits", files=payload).json()
    assert served["model"]["version"] == new != old
    assert served["predictions"][0]["label"] == str((labels[0] + 1) % 10)
    registry.promote("digits", old)
    assert client.post("/digits", files=payload).json()["model"]["version"] == old


def test_promote_404_and_409(client, registry):
    assert client.post("/models/digits/v404/promote", headers=AUTH).status_code == 404
    new = register_shifted_copy(registry)
    (registry.version_dir("digits", new) / "weights.safetensors").write_bytes(b"tampered")
    response = client.post(f"/models/digits/{new}/promote", headers=AUTH)
    assert response.status_code == 409 and response.json()["error"]["code"] == "checksum_mismatch"
    assert registry.resolve("digits") != new


def test_promotion_is_atomic_under_concurrent_requests(store, registry, mnist_test):
    """Every response is entirely one version: its label matches the version it reports."""
    images, labels = mnist_test
    old, new = registry.resolve("digits"), register_shifted_copy(registry)
    expected = {old: lambda y: y, new: lambda y: (y + 1) % 10}
    app = create_app(Settings(store_dir=store, device="cpu", admin_token=ADMIN_TOKEN, preload=False, queue_max=1000))
    body = [("file", (f"{i}.png", png_bytes(images[i]), "image/png")) for i in range(8)]

    async def scenario() -> list[dict]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            async def flip(i: int) -> None:
                target = new if i % 2 == 0 else old
                response = await client.post(f"/models/digits/{target}/promote", headers=AUTH)
                assert response.status_code == 200

            async def predict() -> dict:
                response = await client.post("/digits", files=body)
                assert response.status_code == 200
                return response.json()

            jobs = [predict() for _ in range(40)] + [flip(i) for i in range(10)]
            results = await asyncio.gather(*jobs)
            return [r for r in results if r is not None]

    responses = asyncio.run(scenario())
    seen = set()
    for response in responses:
        version = response["model"]["version"]
        seen.add(version)
        got = [int(p["label"]) for p in response["predictions"]]
        want = [expected[version](int(y)) for y in labels[:8]]
        assert np.mean(np.array(got) == np.array(want)) >= 0.875, (version, got, want)
    assert seen <= {old, new}
