"""Heartbeats: every process sharing a store says what it serves; `GET /models/{task}` shows who converged."""

from __future__ import annotations

import json
import time

from app.serving.heartbeat import FORGET_AFTER_BEATS, REPLICAS_DIR, STALE_AFTER_BEATS
from tests.app.test_rollouts import register_copy
from tests.conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BEAT_S = 0.2


def replicas_of(client, task: str = "digits") -> dict[str, dict]:
    return {r["replica"]: r for r in client.get(f"/models/{task}").json()["replicas"]}


def wait_for(condition, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_two_replicas_on_one_store_see_each_other_converge_after_a_promotion(make_client, registry):
    a = make_client(replica_id="replica-a", heartbeat_s=BEAT_S)
    b = make_client(replica_id="replica-b", heartbeat_s=BEAT_S)
    assert wait_for(lambda: {"replica-a", "replica-b"} <= set(replicas_of(b)))
    candidate = register_copy(registry, "candidate")
    promoted = a.post(f"/models/digits/{candidate}/promote", headers=AUTH)
    assert promoted.status_code == 200 and promoted.json()["replicas_url"] == "/models/digits"
    b.post("/digits", files=[("file", ("d.png", b"x", "image/png"))])  # any request: b resolves anew

    def converged() -> dict | None:
        view = a.get("/models/digits").json()
        mine = {r["replica"]: r for r in view["replicas"]}
        ok = view["converged"] and all(mine[r]["aliases"]["production"] == candidate for r in ("replica-a", "replica-b"))
        return view if ok else None

    view = wait_for(converged)
    assert view, a.get("/models/digits").json()["replicas"]
    assert all(not r["stale"] and r["converged"] for r in view["replicas"])


def test_a_silent_replica_is_stale_and_not_counted_and_a_long_dead_one_is_forgotten(make_client, store):
    client = make_client(replica_id="alive", heartbeat_s=BEAT_S)
    directory = store / REPLICAS_DIR
    wait_for(lambda: (directory / "alive.json").is_file())
    now = time.time()
    for name, age in (("silent", (STALE_AFTER_BEATS + 1) * BEAT_S), ("dead", (FORGET_AFTER_BEATS + 1) * BEAT_S)):
        (directory / f"{name}.json").write_text(json.dumps({
            "replica": name, "host": "elsewhere", "pid": 1, "started_at": "-", "time": "-", "unix_time": now - age,
            "serving": {"digits": {"production": "some-old-version"}}}))
    view = client.get("/models/digits").json()
    replicas = {r["replica"]: r for r in view["replicas"]}
    assert replicas["silent"]["stale"] and not replicas["silent"]["converged"]
    assert "dead" not in replicas and not (directory / "dead.json").exists()
    assert view["converged"]  # the stale one does not count
    assert replicas["alive"]["converged"] and not replicas["alive"]["stale"]


def test_a_replica_that_stops_removes_its_heartbeat(make_client, store):
    client = make_client(replica_id="leaving", heartbeat_s=BEAT_S)
    path = store / REPLICAS_DIR / "leaving.json"
    assert wait_for(path.is_file)
    client.__exit__(None, None, None)
    assert not path.exists()


def test_a_read_only_store_still_lists_replicas_and_never_answers_500(make_client, store):
    client = make_client(replica_id="ro", heartbeat_s=BEAT_S)
    directory = store / REPLICAS_DIR
    wait_for(lambda: (directory / "ro.json").is_file())
    (directory / "dead.json").write_text(json.dumps({"replica": "dead", "host": "h", "pid": 1, "started_at": "-",
                                                     "time": "-", "unix_time": 0, "serving": {}}))
    directory.chmod(0o555)  # the dead one cannot be removed (root ignores this: then it simply is)
    try:
        response = client.get("/models/digits")
    finally:
        directory.chmod(0o755)
    assert response.status_code == 200 and "dead" not in {r["replica"] for r in response.json()["replicas"]}
