"""Canary splits and shadows (`/models/{task}/aliases/{alias}/...`): real versions, real HTTP through the app."""

from __future__ import annotations

import time

import pytest
import torch

from models.registry import ModelRegistry
from models.runtime import load_model
from tests.conftest import ADMIN_TOKEN, png_bytes

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def register_copy(registry: ModelRegistry, version: str, shift: int = 0) -> str:
    """A copy of the production digits network; with `shift`, it answers (true digit + shift) % 10."""
    production = load_model(registry, "digits", "production", torch.device("cpu"))
    network = production.network
    last = network.classifier[-1]
    with torch.no_grad():
        last.weight.copy_(last.weight.roll(shift, dims=0))
        last.bias.copy_(last.bias.roll(shift, dims=0))
    keep = {"kind", "architecture", "labels", "preprocessing", "metrics", "evaluation", "training", "lineage", "serving"}
    return registry.register("digits", network, production.manifest.model_dump(include=keep, exclude_none=True),
                             version=version)


def digit_files(mnist_test, index: int = 0) -> list:
    images, _ = mnist_test
    return [("file", ("d.png", png_bytes(images[index]), "image/png"))]


def wait_for(condition, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_a_20_percent_canary_serves_16_to_24_percent_deterministically_per_request_id(client, registry, mnist_test):
    incumbent, candidate = registry.resolve("digits"), register_copy(registry, "candidate")
    response = client.post("/models/digits/aliases/production/canary", headers=AUTH,
                           json={"version": candidate, "percent": 20, "max_p99_ms": 60_000, "window": 1000})
    assert response.status_code == 200, response.text
    assert response.json()["canary"]["version"] == candidate and response.json()["version"] == incumbent
    files = digit_files(mnist_test)
    served = [client.post("/digits", files=files, headers={"X-Request-ID": f"r-{i}"}).json()["model"]["version"]
              for i in range(1000)]
    share = served.count(candidate) / len(served)
    assert 0.16 <= share <= 0.24 and set(served) == {incumbent, candidate}
    again = [client.post("/digits", files=files, headers={"X-Request-ID": f"r-{i}"}).json()["model"]["version"]
             for i in range(50)]
    assert again == served[:50]  # the same request id, the same side of the split
    state = client.get("/models/digits/aliases/production").json()
    assert state["canary"]["requests"] == served.count(candidate) + again.count(candidate)
    assert client.post(f"/models/digits/predict?version={candidate}", files=files).json()["model"]["version"] == candidate


def test_a_canary_past_its_p99_threshold_is_rolled_back_on_its_own(client, registry, mnist_test):
    incumbent, candidate = registry.resolve("digits"), register_copy(registry, "slow-candidate")
    window = 20
    client.post("/models/digits/aliases/production/canary", headers=AUTH,
                json={"version": candidate, "percent": 50, "max_p99_ms": 0.001, "window": window})
    files = digit_files(mnist_test)
    served = []
    for i in range(200):
        served.append(client.post("/digits", files=files).json()["model"]["version"])
        if served.count(candidate) >= window:
            break
    assert served.count(candidate) == window  # judged once the window is full, not before
    later = [client.post("/digits", files=files).json()["model"]["version"] for _ in range(40)]
    assert set(later) == {incumbent}  # this process stopped at once
    events = wait_for(lambda: [e for e in registry.history("digits") if e["event"] == "canary_rollback"])
    assert events and events[-1]["from"] == incumbent and events[-1]["to"] == candidate
    assert "p99" in events[-1]["reason"] and events[-1]["actor"] == "auto-rollback"
    assert client.get("/models/digits/aliases/production").json()["canary"] is None
    assert registry.resolve("digits") == incumbent
    metrics = client.get("/metrics").text
    assert f'modelhouse_canary_rollbacks_total{{alias="production",task="digits",version="{candidate}"}} 1.0' in metrics


def test_deleting_a_canary_ends_it_and_promoting_its_candidate_completes_it(client, registry, mnist_test):
    candidate = register_copy(registry, "candidate")
    body = {"version": candidate, "percent": 50, "max_p99_ms": 60_000}
    assert client.post("/models/digits/aliases/production/canary", headers=AUTH, json=body).status_code == 200
    ended = client.delete("/models/digits/aliases/production/canary", headers=AUTH, params={"reason": "enough"})
    assert ended.status_code == 200 and ended.json()["canary"] is None
    client.post("/models/digits/aliases/production/canary", headers=AUTH, json=body)
    assert client.post(f"/models/digits/{candidate}/promote", headers=AUTH).status_code == 200
    state = client.get("/models/digits/aliases/production").json()
    assert state["canary"] is None and state["version"] == candidate
    kinds = [e["event"] for e in client.get("/models/digits/history").json()["events"]]
    assert kinds[-5:] == ["canary_start", "canary_end", "canary_start", "promote", "canary_complete"] or \
        kinds[-5:] == ["canary_start", "canary_end", "canary_start", "canary_complete", "promote"]


def test_a_shadow_of_an_identical_copy_agrees_and_is_never_served(client, registry, mnist_test):
    incumbent, twin = registry.resolve("digits"), register_copy(registry, "twin")
    response = client.post("/models/digits/aliases/production/shadow", headers=AUTH,
                           json={"version": twin, "percent": 100})
    assert response.status_code == 200, response.text
    for i in range(30):
        assert client.post("/digits", files=digit_files(mnist_test, i)).json()["model"]["version"] == incumbent
    shadow = wait_for(lambda: (s := client.get("/models/digits/aliases/production").json()["shadow"])
                      and s["requests"] + s["drops"] >= 30 and s)
    assert shadow["requests"] >= 1 and shadow["agreement"] == 1.0 and shadow["errors"] == 0
    assert shadow["compared"] == shadow["requests"]  # one file per request
    metrics = client.get("/metrics").text
    assert f'modelhouse_shadow_inputs_total{{alias="production",outcome="agree",task="digits",version="{twin}"}}' in metrics


def test_a_shadow_that_disagrees_says_so(client, registry, mnist_test):
    shifted = register_copy(registry, "shifted", shift=1)
    client.post("/models/digits/aliases/production/shadow", headers=AUTH, json={"version": shifted, "percent": 100})
    for i in range(10):
        client.post("/digits", files=digit_files(mnist_test, i))
    shadow = wait_for(lambda: (s := client.get("/models/digits/aliases/production").json()["shadow"])
                      and s["requests"] + s["drops"] >= 10 and s)
    assert shadow["agreement"] is not None and shadow["agreement"] <= 0.2
    ended = client.delete("/models/digits/aliases/production/shadow", headers=AUTH)
    assert ended.json()["shadow"] is None
    assert [e["event"] for e in registry.history("digits")][-2:] == ["shadow_start", "shadow_end"]


@pytest.mark.parametrize("body, status", [
    ({"version": "candidate", "percent": 0}, 422),
    ({"version": "candidate", "percent": 100}, 422),
    ({"version": "candidate", "percent": 10, "window": 0}, 422),
    ({"version": "candidate", "percent": 10, "max_error_rate": 2}, 422),
    ({"version": "candidate", "percent": 10, "surprise": 1}, 422),
    ({"version": "no-such-version", "percent": 10}, 404),
])
def test_bad_canaries_are_refused_with_4xx(client, registry, body, status):
    register_copy(registry, "candidate")
    response = client.post("/models/digits/aliases/production/canary", headers=AUTH, json=body)
    assert response.status_code == status and "error" in response.json()
    assert client.get("/models/digits/aliases/production").json()["canary"] is None


def test_rollout_writes_need_the_admin_token(client, registry):
    candidate = register_copy(registry, "candidate")
    response = client.post("/models/digits/aliases/production/canary", json={"version": candidate, "percent": 10})
    assert response.status_code == 401
    assert client.get("/models/digits/aliases/nope").status_code == 404
    assert client.get("/models/nope/aliases/production").status_code == 404


def test_prediction_metrics_carry_task_version_and_alias(client, registry, mnist_test):
    version = registry.resolve("digits")
    client.post("/digits", files=digit_files(mnist_test))
    client.post(f"/models/digits/predict?version={version}", files=digit_files(mnist_test))
    text = client.get("/metrics").text
    assert f'modelhouse_predictions_total{{alias="production",task="digits",version="{version}"}} 1.0' in text
    assert f'modelhouse_predictions_total{{alias="",task="digits",version="{version}"}} 1.0' in text


def test_a_wrong_method_names_every_method_the_path_takes(client):
    response = client.request("OPTIONS", "/models/digits/aliases/production/canary")
    assert response.status_code == 405 and response.headers["allow"] == "DELETE, POST"
    assert client.post("/models/digits/aliases/production/canary", content=b"\xff\xfe{",  # not UTF-8: 400
                       headers={**AUTH, "Content-Type": "application/json"},
                       ).status_code == 400


def test_a_task_name_no_file_system_takes_is_a_404(client, mnist_test):
    for task in ["x" * 300, "%C3%B6%0A" * 60, "%F1%A1%BD%85" * 70]:  # longer than a file name may be
        response = client.post(f"/models/{task}/predict", files=digit_files(mnist_test))
        assert response.status_code == 404, (task, response.text)
