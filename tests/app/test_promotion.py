"""Promotion over HTTP behind the gates: refusal with reasons, force, the tolerance setting, the history
endpoint and who it says made each change, and the admin tokens (named ones, the unnamed one, 401/403)."""

from __future__ import annotations

import hashlib
import os

import pytest

from app.errors import error_parts
from models.registry import InvalidRolloutError, ModelRegistry, PromotionRefusedError
from tests.conftest import ADMIN_TOKEN, png_bytes
from tests.models.test_history import CANARY, register_digits, with_accuracy

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ALICE_TOKEN = "alice-secret-token-1"
ALICE = {"Authorization": f"Bearer {ALICE_TOKEN}"}
TOKEN_IDENTITY = f"token:{hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()[:12]}"


def test_a_worse_candidate_is_refused_with_reasons_and_promoted_with_force(make_client, registry: ModelRegistry,
                                                                            mnist_test):
    client = make_client(preload=False)
    old = registry.resolve("digits")
    worse = register_digits(registry, "worse", **with_accuracy(registry, 0.9))
    refused = client.post(f"/models/digits/{worse}/promote", headers=AUTH)
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "promotion_refused" and "test_accuracy 0.9 is worse" in error["message"]
    assert error["details"] == {"reasons": ["test_accuracy 0.9 is worse than the incumbent's 0.9953 by 0.0953 "
                                            "(higher is better; tolerance 0)"]}
    assert registry.resolve("digits") == old
    payload = [("file", ("d.png", png_bytes(mnist_test[0][0]), "image/png"))]
    assert client.post("/digits", files=payload).json()["model"]["version"] == old

    forced = client.post(f"/models/digits/{worse}/promote", params={"force": "true", "reason": "hotfix"}, headers=AUTH)
    assert forced.status_code == 200, forced.text
    assert forced.json() == {"task": "digits", "alias": "production", "version": worse, "previous": old,
                             "forced": True, "overridden": error["details"]["reasons"], "replicas_url": "/models/digits"}
    assert client.post("/digits", files=payload).json()["model"]["version"] == worse
    back = client.post(f"/models/digits/{old}/promote", headers=AUTH)
    assert back.json() == {"task": "digits", "alias": "production", "version": old, "previous": worse,
                           "forced": False, "overridden": [], "replicas_url": "/models/digits"}


def test_the_tolerance_setting_lets_a_slightly_worse_candidate_through(make_client, registry: ModelRegistry):
    client = make_client(preload=False, promotion_tolerance=0.1)
    worse = register_digits(registry, "worse", **with_accuracy(registry, 0.9))
    response = client.post(f"/models/digits/{worse}/promote", headers=AUTH)
    assert response.status_code == 200 and response.json()["overridden"] == []
    relabelled = register_digits(registry, "relabelled", labels=[f"d{i}" for i in range(10)])
    refused = client.post(f"/models/digits/{relabelled}/promote", headers=AUTH)
    assert refused.status_code == 409 and refused.json()["error"]["details"]["reasons"][0].startswith("labels differ")


def test_history_shows_every_change_with_the_callers_identity_and_never_a_token(make_client, registry: ModelRegistry):
    client = make_client(preload=False, admin_tokens={"alice": ALICE_TOKEN})
    old = registry.resolve("digits")
    assert client.get("/models/digits/history").json() == {"task": "digits", "events": []}
    worse = register_digits(registry, "worse", **with_accuracy(registry, 0.9))
    assert client.post(f"/models/digits/{worse}/promote?force=true&reason=try%20it", headers=ALICE).status_code == 200
    assert client.post(f"/models/digits/{old}/promote", headers=AUTH).status_code == 200
    assert client.post(f"/models/digits/{worse}/promote", headers=AUTH).status_code == 409  # refused: no change
    registry.start_canary("digits", "production", worse, **CANARY, actor="cli:ops", force=True)
    registry.end_canary("digits", "production", actor="auto-rollback", reason="p99", rolled_back=True,
                        stats={"requests": 20})
    response = client.get("/models/digits/history")
    assert response.status_code == 200
    events = response.json()["events"]
    assert [(e["event"], e["from"], e["to"], e["actor"]) for e in events] == [
        ("promote", old, worse, "alice"), ("promote", worse, old, TOKEN_IDENTITY),
        ("canary_start", old, worse, "cli:ops"), ("canary_rollback", old, worse, "auto-rollback")]
    assert events[0]["forced"] is True and events[0]["reason"] == "try it"
    assert events[0]["overridden"][0].startswith("test_accuracy 0.9 is worse")
    assert events[2]["window"] == CANARY["window"] and events[3]["stats"] == {"requests": 20}
    assert ALICE_TOKEN not in response.text and ADMIN_TOKEN not in response.text
    assert ALICE_TOKEN not in (registry.task_dir("digits") / "history.jsonl").read_text()
    latest = client.get("/models/digits/history", params={"limit": 1}).json()["events"]
    assert [e["event"] for e in latest] == ["canary_rollback"]
    assert client.get("/models/speech/history").status_code == 404
    assert client.get("/models/digits/history", params={"limit": 0}).status_code == 422


def test_admin_tokens_keep_401_and_403(make_client, registry: ModelRegistry):
    target = f"/models/digits/{registry.resolve('digits')}/promote"
    disabled = make_client(preload=False, admin_token=None)
    response = disabled.post(target, headers=AUTH)
    assert response.status_code == 403 and "disabled" in response.json()["error"]["message"]
    named_only = make_client(preload=False, admin_token=None, admin_tokens={"alice": ALICE_TOKEN})
    missing = named_only.post(target)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert named_only.post(target, headers=AUTH).status_code == 403, "the unnamed token is not configured here"
    wrong = named_only.post(target, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
    assert named_only.post(target, headers=ALICE).status_code == 200
    assert named_only.get("/models/digits/history").json()["events"][-1]["actor"] == "alice"
    too_long = named_only.post(target, params={"reason": "x" * 501}, headers=ALICE)
    assert too_long.status_code == 422 and too_long.json()["error"]["code"] == "invalid_parameters"


def test_admin_tokens_must_be_distinct(make_client):
    with pytest.raises(ValueError, match="each token must be distinct"):
        make_client(preload=False, admin_tokens={"alice": ADMIN_TOKEN})


def test_the_openapi_documents_the_refusal_and_the_history(make_client):
    paths = make_client(preload=False).get("/openapi.json").json()["paths"]
    promote = paths["/models/{task}/{version}/promote"]["post"]
    assert "promotion_refused" in promote["responses"]["409"]["description"]
    assert {"force", "reason", "alias"} <= {p["name"] for p in promote["parameters"]}
    assert "/models/{task}/history" in paths


def test_rollout_errors_map_to_their_status():
    status, body, _ = error_parts(PromotionRefusedError("refused", ["a", "b"]))
    assert (status, body["error"]["code"], body["error"]["details"]) == (409, "promotion_refused", {"reasons": ["a", "b"]})
    status, body, _ = error_parts(InvalidRolloutError("percent must be > 0 and < 100"))
    assert (status, body["error"]["code"]) == (422, "invalid_rollout") and "details" not in body["error"]


def test_a_store_that_cannot_be_written_is_a_503_not_a_500(client, registry, store):
    lock = store / "digits" / ".aliases.lock"
    lock.unlink(missing_ok=True)
    (store / "digits").chmod(0o555)  # read-only, as the image's store is under readOnlyRootFilesystem
    try:
        if os.access(store / "digits", os.W_OK):  # root ignores the mode: make the lock path a directory instead
            (store / "digits").chmod(0o755)
            lock.mkdir()
        response = client.post(f"/models/digits/{registry.resolve('digits')}/promote", headers=AUTH)
    finally:
        (store / "digits").chmod(0o755)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "store_unavailable"
    assert client.get("/healthz").status_code == 200
