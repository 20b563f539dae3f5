"""A fleet on one object store: two services (real apps, real HTTP through ASGI) over a real S3 server."""

from __future__ import annotations

import time

import torch

from models.registry.synced import open_registry
from models.runtime import load_model
from tests.app.test_rollouts import digit_files, register_copy
from tests.conftest import ADMIN_TOKEN
from tests.models.test_object_store import point_alias, put_version

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
POLL_S = 0.2


def wait_for(condition, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def served_version(client, mnist_test) -> str | None:
    response = client.post("/digits", files=digit_files(mnist_test))
    assert response.status_code == 200, response.text
    return response.json()["model"]["version"]


def replica(make_client, s3_store, tmp_path, name: str):
    return make_client(store=s3_store, cache_dir=tmp_path / name, alias_poll_s=POLL_S, replica_id=name,
                       heartbeat_s=POLL_S)


def test_a_promotion_through_one_replica_reaches_the_other_and_both_say_so(make_client, s3_store, tmp_path,
                                                                          mnist_test):
    a, b = replica(make_client, s3_store, tmp_path, "a"), replica(make_client, s3_store, tmp_path, "b")
    assert a.get("/readyz").json()["store"] == "ok"
    before = served_version(b, mnist_test)
    candidate = register_copy(a.app.state.server.registry, "candidate")  # a trainer writing through a's mirror
    promoted = a.post(f"/models/digits/{candidate}/promote", headers=AUTH)
    assert promoted.status_code == 200, promoted.text
    assert served_version(a, mnist_test) == candidate != before
    assert wait_for(lambda: served_version(b, mnist_test) == candidate)

    def converged():
        view = b.get("/models/digits").json()
        names = {r["replica"] for r in view["replicas"] if r["converged"]}
        return view if view["converged"] and {"a", "b"} <= names else None

    view = wait_for(converged)
    assert view, b.get("/models/digits").json()
    assert view["store"]["aliases"] == {"production": candidate} and not view["store"]["degraded"]


def test_a_task_registered_from_a_training_machine_is_served_without_a_restart(make_client, s3_store, registry,
                                                                                tmp_path, mnist_test):
    client = replica(make_client, s3_store, tmp_path, "a")
    assert client.post("/models/copied/predict", files=digit_files(mnist_test)).status_code == 404
    trainer = open_registry(s3_store, tmp_path / "trainer")  # its own mirror, as on another machine
    production = load_model(registry, "digits", "production", torch.device("cpu"))
    keep = {"kind", "architecture", "labels", "preprocessing", "metrics", "evaluation", "training", "lineage", "serving"}
    version = trainer.register("copied", production.network, production.manifest.model_dump(include=keep,
                                                                                             exclude_none=True))
    trainer.promote("copied", version, actor="trainer:test")
    assert wait_for(lambda: client.post("/models/copied/predict", files=digit_files(mnist_test)).status_code == 200)


def test_while_the_store_is_down_the_replica_serves_stays_ready_and_says_degraded(make_client, s3_server, s3_store,
                                                                                 tmp_path, mnist_test):
    client = replica(make_client, s3_store, tmp_path, "a")
    candidate = register_copy(client.app.state.server.registry, "candidate")
    version = served_version(client, mnist_test)
    s3_server.stop()
    assert wait_for(lambda: client.get("/readyz").json()["store"] == "degraded")
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert "modelhouse_store_degraded 1.0" in client.get("/metrics").text
    assert all(served_version(client, mnist_test) == version for _ in range(20))
    refused = client.post(f"/models/digits/{candidate}/promote", headers=AUTH)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "store_unavailable"
    assert client.get("/models/digits").json()["store"]["degraded"]
    s3_server.start()
    assert wait_for(lambda: client.get("/readyz").json()["store"] == "ok")
    assert client.post(f"/models/digits/{candidate}/promote", headers=AUTH).status_code == 200
    assert served_version(client, mnist_test) == candidate


def test_a_corrupted_version_is_refused_by_every_replica_and_the_refusal_is_shown(make_client, s3_store, registry,
                                                                                 tmp_path, mnist_test):
    a, b = replica(make_client, s3_store, tmp_path, "a"), replica(make_client, s3_store, tmp_path, "b")
    good = served_version(a, mnist_test)
    put_version(registry, good, as_version="corrupted", corrupt="weights.safetensors")
    point_alias("corrupted")
    for client in (a, b):
        assert wait_for(lambda c=client: "corrupted" in c.get("/models/digits").json()["store"]["refused"])
        view = client.get("/models/digits").json()
        assert "sha256" in view["store"]["refused"]["corrupted"] and view["aliases"] == {"production": good}
        assert view["store"]["aliases"] == {"production": "corrupted"} and not view["converged"]
        assert served_version(client, mnist_test) == good
