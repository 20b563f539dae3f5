"""POST /models/{task}/predict: every registered task is served, the named endpoints are aliases of it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from models.registry import DEFAULT_ROOT, ModelRegistry
from tests.app.test_digits import assert_error, files_of
from tests.conftest import IMAGENET_SAMPLES, png_bytes


def test_a_task_copied_into_the_store_while_serving_is_served_at_once(client, store, mnist_test):
    """No code, no restart: a directory with a version and an alias file is a task from the next request."""
    images, labels = mnist_test
    assert_error(client.post("/models/handwriting/predict", files=files_of(png_bytes(images[0]))), 404, "unknown_task")
    version = ModelRegistry(store).resolve("digits")
    shutil.copytree(store / "digits" / version, store / "handwriting" / version)
    (store / "handwriting" / "aliases.json").write_text(json.dumps({"production": version}))
    response = client.post("/models/handwriting/predict", files=files_of(*(png_bytes(d) for d in images[:20])))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"task": "handwriting", "version": version}
    assert sum(int(p["label"]) == int(y) for p, y in zip(body["predictions"], labels[:20])) >= 19
    assert "handwriting" in [t["task"] for t in client.get("/models").json()["tasks"]]
    assert client.get("/models/handwriting").json()["versions"][0]["kind"] == "image-classification"


def photo(name: str) -> bytes:
    return (IMAGENET_SAMPLES / name).read_bytes()


@pytest.mark.parametrize("path,task,params", [
    ("/digits", "digits", {"top_k": 5}), ("/digits", "digits", {"debug": "true"}),
    ("/components", "components", {}), ("/imagenet/top5", "imagenet", {"top_k": 7}),
])
def test_named_image_endpoints_answer_exactly_what_the_generic_route_answers(client, mnist_test, path, task, params):
    upload = png_bytes(mnist_test[0][0]) if task == "digits" else photo("teapot.jpg")
    files = [("file", ("a", upload, "image/jpeg" if task != "digits" else "image/png"))]
    named, generic = client.post(path, params=params, files=files), client.post(f"/models/{task}/predict",
                                                                                   params=params, files=files)
    assert named.status_code == generic.status_code == 200, named.text
    assert named.json() == generic.json()


@pytest.mark.parametrize("body", [{"prefix": "hel"}, {"prefix": "s", "version": "seed", "strategy": "greedy"},
                                  {"prefix": "gr", "strategy": "sample", "seed": 3, "num_completions": 4}])
def test_named_text_endpoint_answers_exactly_what_the_generic_route_answers(client, body):
    named, generic = client.post("/rnn/complete", json=body), client.post("/models/rnn/predict", json=body)
    assert named.status_code == generic.status_code == 200, named.text
    assert named.json() == generic.json()


@pytest.mark.parametrize("path,kwargs,status,code", [
    ("/models/digits/predict", {"json": {"prefix": "a"}}, 415, "unsupported_media_type"),
    ("/models/rnn/predict", {"files": [("file", ("a.png", b"x", "image/png"))]}, 415, "unsupported_media_type"),
    ("/models/rnn/predict?top_k=3", {"json": {"prefix": "a"}}, 422, "invalid_parameters"),
    ("/models/no-such-task/predict", {"json": {"prefix": "a"}}, 404, "unknown_task"),
    ("/models/.hidden/predict", {"json": {"prefix": "a"}}, 404, "unknown_version"),
    ("/models/digits/predict?version=nope", {"files": [("file", ("a.png", b"x", "image/png"))]}, 404, "unknown_version"),
])
def test_a_body_that_does_not_fit_the_kind_is_a_clear_4xx(client, path, kwargs, status, code):
    assert_error(client.post(path, **kwargs), status, code)


def test_every_answer_carries_a_request_id(client, mnist_test):
    mine = client.post("/digits", files=files_of(png_bytes(mnist_test[0][0])), headers={"X-Request-ID": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    fresh = client.get("/healthz").headers["x-request-id"]
    unusable = client.get("/healthz", headers={"X-Request-ID": "has spaces\tand tabs"}).headers["x-request-id"]
    assert len(fresh) == len(unusable) == 32 and fresh != unusable
    assert client.post("/models/x/predict").headers["x-request-id"]  # errors too


def test_the_openapi_schema_documents_the_generic_and_named_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    generic = paths["/models/{task}/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= generic.keys()
    assert list(paths["/digits"]["post"]["requestBody"]["content"]) == ["multipart/form-data"]
    assert list(paths["/rnn/complete"]["post"]["requestBody"]["content"]) == ["application/json"]


def test_importing_the_app_sets_nothing_process_wide():
    code = ("import sys, torch; before = (torch.get_num_threads(), sys.getswitchinterval()); import logging; "
            "import app.main, app.__main__, app.workers; "
            "assert (torch.get_num_threads(), sys.getswitchinterval()) == before; "
            "assert not logging.getLogger().handlers; assert not hasattr(app.main, 'app')")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_served_parameter_count_is_the_whole_network(client):
    """A transfer-learned version stores only its fine-tuned tensors; it still reports every parameter it runs."""
    for version in client.get("/models/components").json()["versions"]:
        assert version["parameters"] == 3_383_818, version


def test_a_manifest_with_a_bad_field_is_refused_naming_it(client, store, mnist_test):
    version = ModelRegistry(store).resolve("digits")
    path = store / "digits" / version / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["serving"] = {"max_top_k": 0}
    bad = store / "digits" / "bad-serving"
    shutil.copytree(store / "digits" / version, bad)
    (bad / "manifest.json").write_text(json.dumps({**manifest, "version": "bad-serving"}))
    body = assert_error(client.post("/digits", params={"version": "bad-serving"}, files=files_of(png_bytes(mnist_test[0][0]))),
                        409, "invalid_model")
    assert "serving.max_top_k" in body["error"]["message"]
    assert DEFAULT_ROOT.is_dir()


def test_middleware_added_later_applies_to_prediction_routes_too(store, mnist_test):
    """One request path: whatever `add_middleware` adds (auth, CORS, ...) wraps predictions as well."""
    from fastapi.testclient import TestClient
    from starlette.middleware.base import BaseHTTPMiddleware

    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(store_dir=store, device="cpu", preload=False, gc_freeze=False))
    seen: list[str] = []

    async def record(request, call_next):
        seen.append(request.url.path)
        response = await call_next(request)
        response.headers["x-added-later"] = "yes"
        return response

    app.add_middleware(BaseHTTPMiddleware, dispatch=record)
    with TestClient(app) as client:
        for path in ("/digits", "/models/digits/predict", "/healthz"):
            kwargs = {"files": files_of(png_bytes(mnist_test[0][0]))} if path != "/healthz" else {}
            response = client.request("POST" if path != "/healthz" else "GET", path, **kwargs)
            assert response.status_code == 200 and response.headers["x-added-later"] == "yes", (path, response.text)
            assert response.headers["x-request-id"]
    assert seen == ["/digits", "/models/digits/predict", "/healthz"]
