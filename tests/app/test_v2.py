"""The Open Inference Protocol v2 routes: the real `tritonclient` against a real server on loopback, one
hand-built binary request checked byte for byte, the protocol's error shape, and the KServe manifest."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import struct
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import tritonclient.http as triton
import yaml
from tritonclient.utils import InferenceServerException

from app.errors import ApiError
from app.kinds.image_classification import ImageClassification, ImageItem, TensorItem
from app.settings import Settings
from models.preprocessing import image_to_array, to_tensor
from models.registry import DEFAULT_ROOT, ModelRegistry
from models.runtime import load_model
from tests.conftest import COMPONENTS_DIR, IMAGENET_SAMPLES, REPO, free_port, png_bytes, wait_until_ready

IMAGE_TASKS = {"digits": 10, "components": 10, "imagenet": 1000}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ModelRegistry]]:
    """A real server (uvicorn, the app factory) over a private copy of the store: its host:port and registry."""
    root = tmp_path_factory.mktemp("v2") / "store"
    shutil.copytree(DEFAULT_ROOT, root, ignore=shutil.ignore_patterns(".*"))
    port = free_port()
    env = {**os.environ, "MODELHOUSE_STORE_DIR": str(root), "MODELHOUSE_DEVICE": "cpu", "MODELHOUSE_LOG_LEVEL": "WARNING"}
    with (root.parent / "server.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_ready(f"http://127.0.0.1:{port}", proc, timeout=180)
            yield f"127.0.0.1:{port}", ModelRegistry(root)
        finally:
            proc.terminate()
            proc.wait(timeout=20)


@pytest.fixture(scope="module")
def client(served: tuple[str, ModelRegistry]) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(served[0], network_timeout=120.0, connection_timeout=120.0)


@pytest.fixture(scope="module")
def samples(mnist_test: tuple[np.ndarray, np.ndarray]) -> dict[str, list[bytes]]:
    """Two image files per image task."""
    images, _ = mnist_test
    relay = sorted((COMPONENTS_DIR / "validation" / "relay").glob("*.jpg"))[:2]
    return {"digits": [png_bytes(images[0]), png_bytes(images[1])],
            "components": [p.read_bytes() for p in relay],
            "imagenet": [(IMAGENET_SAMPLES / name).read_bytes() for name in ("tench.jpg", "volcano.jpg")]}


def rest(address: str, path: str, body: bytes, content_type: str) -> dict:
    request = urllib.request.Request(f"http://{address}{path}", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def rest_predict(address: str, task: str, files: list[bytes], **query: object) -> list[dict]:
    """The REST route's predictions for `files` (top_k: every class)."""
    boundary = uuid.uuid4().hex
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f{i}"\r\n\r\n'.encode()
                    + data + b"\r\n" for i, data in enumerate(files)) + f"--{boundary}--\r\n".encode()
    query_string = "&".join(f"{k}={v}" for k, v in query.items())
    return rest(address, f"/models/{task}/predict?{query_string}", body,
                f"multipart/form-data; boundary={boundary}")["predictions"]


def image_input(files: list[bytes], binary: bool, shape: list[int] | None = None) -> triton.InferInput:
    tensor = triton.InferInput("image", shape or [len(files)], "BYTES")
    elements = files if binary else [base64.b64encode(data) for data in files]
    tensor.set_data_from_numpy(np.array(elements, dtype=object).reshape(shape or [len(files)]), binary_data=binary)
    return tensor


def test_health_and_server_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "modelhouse" and metadata["version"]
    assert {"binary_tensor_data", "classification"} <= set(metadata["extensions"])


def test_model_metadata_comes_from_the_manifest(client, served):
    registry = served[1]
    for task, classes in IMAGE_TASKS.items():
        metadata = client.get_model_metadata(task)
        size = registry.manifest(task).preprocessing["size"]
        channels = registry.manifest(task).preprocessing["channels"]
        assert metadata["name"] == task and metadata["versions"] == registry.versions(task)
        assert metadata["platform"] in ("onnxruntime_onnx", "pytorch")
        assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]},
                                      {"name": "input", "datatype": "FP32", "shape": [-1, channels, *size]}]
        assert metadata["outputs"][:2] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
                                           {"name": "label", "datatype": "BYTES", "shape": [-1]}]
        assert client.is_model_ready(task)
    assert client.get_model_metadata("components")["outputs"][2] == {"name": "unknown", "datatype": "BOOL", "shape": [-1]}
    assert client.get_model_metadata("digits")["inputs"][1]["shape"] == [-1, 1, 28, 28]
    rnn = client.get_model_metadata("rnn", registry.aliases("rnn")["seed"])
    assert rnn["inputs"] == [{"name": "prefix", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in rnn["outputs"]] == ["completions", "probabilities", "ended"]
    older = next(v for v in registry.versions("components") if v != registry.aliases("components")["production"])
    assert not client.is_model_ready("components", older)  # known, not loaded (yet)


@pytest.mark.parametrize("task", sorted(IMAGE_TASKS))
def test_image_infer_json_and_binary_match_the_rest_route(client, served, samples, task):
    files = samples[task]
    expected = rest_predict(served[0], task, files, top_k=IMAGE_TASKS[task] if task != "imagenet" else 20)
    binary = client.infer(task, [image_input(files, True)], request_id="req-1")
    assert binary.get_response()["id"] == "req-1"
    assert binary.get_response()["model_version"] == served[1].aliases(task)["production"]
    assert all("binary_data_size" in o["parameters"] for o in binary.get_response()["outputs"])  # tritonclient's default
    as_json = client.infer(task, [image_input(files, False, [len(files), 1])],
                           outputs=[triton.InferRequestedOutput(name, binary_data=False) for name in ("probabilities", "label")])
    assert all("data" in o for o in as_json.get_response()["outputs"])
    for result in (binary, as_json):
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (len(files), IMAGE_TASKS[task]) and probabilities.dtype == np.float32
        labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
        assert labels == [p["label"] for p in expected]
        for row, prediction in zip(probabilities, expected):
            assert row.argmax() == prediction["top"][0]["index"]
            assert row.max() == pytest.approx(prediction["confidence"], abs=2e-6)
    if task == "components":
        assert binary.as_numpy("unknown").tolist() == [p["unknown"] for p in expected]


def test_preprocessed_fp32_input_gives_the_same_probabilities(client, served, samples):
    manifest = served[1].manifest("digits")
    batch = to_tensor([image_to_array(f, manifest.preprocessing, max_pixels=10**7) for f in samples["digits"]],
                      manifest.preprocessing).numpy()
    from_files = client.infer("digits", [image_input(samples["digits"], True)]).as_numpy("probabilities")
    for binary in (True, False):
        tensor = triton.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=binary)
        result = client.infer("digits", [tensor], outputs=[triton.InferRequestedOutput("probabilities", binary_data=binary)])
        np.testing.assert_allclose(result.as_numpy("probabilities"), from_files, atol=1e-6)


def test_the_kind_predicts_files_and_preprocessed_tensors_in_one_batch(registry, samples):
    model = load_model(registry, "digits", "production", torch.device("cpu"))
    array = to_tensor([image_to_array(samples["digits"][1], model.preprocessing, max_pixels=10**7)],
                      model.preprocessing).numpy()[0]
    files, tensor, file_again = ImageClassification(Settings()).predict(
        model, [ImageItem(samples["digits"][0], None), TensorItem(array), ImageItem(samples["digits"][1], None)])
    assert files.probabilities.argmax() != tensor.probabilities.argmax()
    torch.testing.assert_close(tensor.probabilities, file_again.probabilities)


@pytest.mark.parametrize("binary", [True, False])
def test_text_infer_matches_the_rest_route(client, served, binary):
    expected = rest(served[0], "/rnn/complete", json.dumps({"prefix": "hel", "num_completions": 4}).encode(),
                    "application/json")["completions"]
    prefix = triton.InferInput("prefix", [1], "BYTES")
    prefix.set_data_from_numpy(np.array([b"hel"], dtype=object), binary_data=binary)
    result = client.infer("rnn", [prefix], parameters={"num_completions": 4},
                          outputs=[triton.InferRequestedOutput(n, binary_data=binary)
                                   for n in ("completions", "probabilities", "ended")])
    texts = [t.decode() if isinstance(t, bytes) else t for t in result.as_numpy("completions")[0]]
    assert texts == [c["text"] for c in expected]
    np.testing.assert_allclose(result.as_numpy("probabilities")[0], [c["probability"] for c in expected], atol=1e-6)
    assert result.as_numpy("ended")[0].tolist() == [c["ended"] for c in expected]


def test_versioned_urls(client, served, samples):
    registry = served[1]
    seed = registry.aliases("rnn")["seed"]
    prefix = triton.InferInput("prefix", [2, 1], "BYTES")
    prefix.set_data_from_numpy(np.array([[b"th"], [b"he"]], dtype=object))
    result = client.infer("rnn", [prefix], model_version=seed, parameters={"num_completions": 2})
    assert result.get_response()["model_version"] == seed and result.as_numpy("completions").shape == (2, 2)
    expected = rest(served[0], "/rnn/complete", json.dumps({"prefix": "th", "num_completions": 2, "version": "seed"}).encode(),
                    "application/json")["completions"]
    assert [t.decode() for t in result.as_numpy("completions")[0]] == [c["text"] for c in expected]
    assert client.is_model_ready("rnn", seed)
    digits = registry.aliases("digits")["production"]
    answer = client.infer("digits", [image_input(samples["digits"][:1], True)], model_version=digits)
    assert answer.get_response()["model_version"] == digits


def test_classification_extension(client, samples):
    for binary in (True, False):
        result = client.infer("imagenet", [image_input(samples["imagenet"], True)],
                              outputs=[triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=5),
                                       triton.InferRequestedOutput("label", binary_data=binary)])
        classes = result.as_numpy("probabilities")
        assert classes.shape == (2, 5) and result.get_response()["outputs"][0]["datatype"] == "BYTES"
        for row, label in zip(classes, result.as_numpy("label")):
            entries = [(v.decode() if isinstance(v, bytes) else v).split(":", 2) for v in row]
            values = [float(value) for value, _, _ in entries]
            assert values == sorted(values, reverse=True) and 0 < values[0] <= 1
            assert entries[0][2] == (label.decode() if isinstance(label, bytes) else label)
            assert all(index.isdigit() for _, index, _ in entries)
    assert entries[0][2].startswith("volcano")


def test_unknown_model_or_version_is_404(client, samples):
    for model, version in (("nope", ""), ("digits", "no-such-version")):
        with pytest.raises(InferenceServerException) as caught:
            client.infer(model, [image_input(samples["digits"][:1], True)], model_version=version)
        assert caught.value.status() == "404" and (model if model == "nope" else version) in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("nope")
    assert caught.value.status() == "404"


def test_bad_datatype_or_shape_is_400_naming_the_signature(client):
    cases = [("image", np.zeros([1], np.float64), "FP64"), ("input", np.zeros([1, 1, 27, 27], np.float32), "FP32"),
             ("input", np.zeros([1, 1, 28, 28], np.int32), "INT32")]
    for name, data, datatype in cases:
        tensor = triton.InferInput(name, list(data.shape), datatype)
        tensor.set_data_from_numpy(data)
        with pytest.raises(InferenceServerException) as caught:
            client.infer("digits", [tensor])
        assert caught.value.status() == "400"
        assert "'image' BYTES [-1]" in caught.value.message() and "'input' FP32 [-1,1,28,28]" in caught.value.message()
    prefix = triton.InferInput("prefix", [1], "INT32")
    prefix.set_data_from_numpy(np.zeros([1], np.int32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("rnn", [prefix])
    assert caught.value.status() == "400" and "'prefix' BYTES [-1]" in caught.value.message()


def test_golden_binary_request_byte_for_byte(served, mnist_test):
    """The binary tensor data extension by hand: the JSON header, then each BYTES element's 4-byte
    little-endian length and bytes; the answer's binary output the same way."""
    address, registry = served
    png = png_bytes(mnist_test[0][0])  # MNIST test digit 0: a 7
    header = (b'{"id":"golden-1","inputs":[{"name":"image","datatype":"BYTES","shape":[1],'
              b'"parameters":{"binary_data_size":%d}}],'
              b'"outputs":[{"name":"label","parameters":{"binary_data":true}}]}' % (len(png) + 4))
    body = header + struct.pack("<I", len(png)) + png
    assert body[len(header):len(header) + 4] == len(png).to_bytes(4, "little") and body.endswith(png)
    connection = http.client.HTTPConnection(*address.split(":"), timeout=60)
    connection.request("POST", "/v2/models/digits/infer", body=body, headers={
        "Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"})
    response = connection.getresponse()
    answer = response.read()
    assert response.status == 200, answer
    version = registry.aliases("digits")["production"].encode()
    expected_header = (b'{"model_name":"digits","model_version":"' + version + b'","id":"golden-1","outputs":['
                       b'{"name":"label","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":5}}]}')
    assert answer == expected_header + b"\x01\x00\x00\x00" + b"7"
    assert response.getheader("Inference-Header-Content-Length") == str(len(expected_header))
    assert response.getheader("Content-Type") == "application/octet-stream"
    assert response.getheader("Content-Length") == str(len(answer)) and response.getheader("X-Request-ID")
    connection.close()


def test_one_path_metrics_count_v2_requests(served, client, samples):
    client.infer("digits", [image_input(samples["digits"], True)])
    with urllib.request.urlopen(f"http://{served[0]}/metrics", timeout=30) as response:
        text = response.read().decode()
    assert 'route="/v2/models/{model}/infer"' in text and any(line.startswith("modelhouse_predictions_total{") and 'task="digits"' in line
                                                             for line in text.splitlines())
    assert 'route="/v2/models/{model}/versions/{version}/infer"' in text


def oip_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert isinstance(message, str) and all(w in message for w in words), message
    return message


def infer_body(inputs: list[dict], **extra: object) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def test_errors_have_the_protocol_shape(make_client):
    app_client = make_client(max_request_bytes=4096, preload=False)
    url = "/v2/models/digits/infer"
    truncated = base64.b64encode(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR").decode()
    one = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [truncated]}
    oip_error(app_client.post(url, content=b"x" * 5000), 413, "limit")
    oip_error(app_client.post(url, content=b"{not json"), 400, "JSON")
    oip_error(app_client.post(url, content=infer_body([{**one, "data": ["%%%"]}])), 400, "base64")
    oip_error(app_client.post(url, content=infer_body([one])), 400, "image 0")  # undecodable file
    oip_error(app_client.post(url, content=infer_body([{**one, "shape": [2]}])), 400, "needs 2")
    oip_error(app_client.post(url, content=infer_body([one], outputs=[{"name": "label", "parameters": {"classification": 2}}])),
              400, "classification")
    oip_error(app_client.post(url, content=infer_body([one], outputs=[{"name": "logits"}])), 400, "'probabilities' FP32")
    binary = infer_body([{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 10}}])
    oip_error(app_client.post(url, content=binary + b"\x02\x00\x00\x00ab",
                              headers={"Inference-Header-Content-Length": str(len(binary))}), 400, "binary_data_size")
    oip_error(app_client.post(url, content=binary, headers={"Content-Encoding": "gzip"}), 415, "uncompressed")
    prefix = {"name": "prefix", "datatype": "BYTES", "shape": [1], "data": ["hel"]}
    oip_error(app_client.post("/v2/models/rnn/infer", content=infer_body([prefix], parameters={"num_completions": 99})),
              400, "parameters.num_completions")
    oip_error(app_client.post("/v2/models/rnn/infer", content=infer_body([{**prefix, "data": ["h3l"]}])), 422, "vocabulary")
    oip_error(app_client.get("/v2/models/digits/nothing"), 404, "/v2/models/digits/nothing")
    assert oip_error(app_client.get(url), 405, "POST") and app_client.get(url).headers["allow"] == "POST"


def test_queue_full_and_deadline_answers_keep_their_status_and_headers(make_client):
    app_client = make_client(preload=False)
    server = app_client.app.state.server

    async def full(model, kind, items, alias=None):
        raise ApiError(503, "overloaded", f"{model.task} is at capacity; retry shortly", headers={"Retry-After": "1"})

    server._run_batched = full  # the one batching path every prediction route takes
    body = infer_body([{"name": "prefix", "datatype": "BYTES", "shape": [1], "data": ["hel"]}])
    response = app_client.post("/v2/models/rnn/infer", content=body)
    assert oip_error(response, 503, "capacity") and response.headers["retry-after"] == "1"


def test_kserve_inference_service_manifest():
    manifest = yaml.safe_load((REPO / "deploy" / "kserve" / "inferenceservice.yaml").read_text())
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1" and manifest["kind"] == "InferenceService"
    assert manifest["metadata"]["name"]
    predictor = manifest["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container" and container["image"].startswith("modelhouse")
    (port,) = container["ports"]
    assert port["containerPort"] == 8000  # the image's CMD: python -m app --port 8000
    for probe, path in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
        assert container[probe]["httpGet"] == {"path": path, "port": 8000}
    assert predictor["securityContext"]["runAsNonRoot"] is True and predictor["securityContext"]["runAsUser"] == 10001
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODELHOUSE_WORKERS"] == str(container["resources"]["limits"]["cpu"])
    assert "EXPOSE 8000" in (REPO / "Dockerfile").read_text()


def test_bench_module_help_and_body():
    from bench.v2 import main, v2_body

    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    body, length = v2_body(b"PNG")
    assert body[length:] == b"\x03\x00\x00\x00PNG" and json.loads(body[:length])["inputs"][0]["parameters"] == {
        "binary_data_size": 7}
    lua = (REPO / "bench" / "post.lua").read_text()
    assert "Inference-Header-Content-Length" in lua and "binary_data_output" in lua
