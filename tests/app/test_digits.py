"""POST /digits through the real ASGI app and the committed model: one test per status path."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from bench.digit_photos import VARIANTS
from models.imaging import UndecodableImageError
from models.registry import ModelRegistry
from models.runtime import load_model
from tests.conftest import png_bytes
from tests.models.test_imaging import png_bomb


def files_of(*payloads: bytes, content_type: str = "image/png") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"f{i}.png", data, content_type)) for i, data in enumerate(payloads)]


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    return body


def test_mnist_test_digits_as_png_are_classified(client, mnist_test):
    images, labels = mnist_test
    correct = 0
    for start in range(0, 200, 20):  # 20 files per request, in order
        payloads = [png_bytes(d) for d in images[start : start + 20]]
        response = client.post("/digits", files=files_of(*payloads))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"]["task"] == "digits"
        assert [p["filename"] for p in body["predictions"]] == [f"f{i}.png" for i in range(20)]
        correct += sum(int(p["label"]) == int(y) for p, y in zip(body["predictions"], labels[start : start + 20]))
    assert correct >= 198


def test_response_shape_top_k_and_confidence(client, mnist_test):
    images, labels = mnist_test
    response = client.post("/digits", params={"top_k": 5}, files=files_of(png_bytes(images[0])))
    prediction = response.json()["predictions"][0]
    assert prediction["label"] == str(labels[0])
    assert len(prediction["top"]) == 5
    probabilities = [t["probability"] for t in prediction["top"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert prediction["confidence"] == probabilities[0] > 0.9
    default = client.post("/digits", files=files_of(png_bytes(images[0]))).json()
    assert len(default["predictions"][0]["top"]) == 3


def test_photo_of_a_digit(client, mnist_test):
    images, labels = mnist_test
    rng = np.random.default_rng(0)
    photo = VARIANTS["noisy_photo"](images[1], rng)
    response = client.post("/digits", files=[("file", ("photo.jpg", photo, "image/jpeg"))])
    assert response.json()["predictions"][0]["label"] == str(labels[1])


def test_explicit_version_id(client, registry, mnist_test):
    version = registry.resolve("digits", "production")
    response = client.post("/digits", params={"version": version}, files=files_of(png_bytes(mnist_test[0][0])))
    assert response.status_code == 200 and response.json()["model"]["version"] == version


def test_400_undecodable_image(client):
    broken = png_bytes(np.zeros((64, 64), np.uint8))[:60]
    body = assert_error(client.post("/digits", files=files_of(broken)), 400, "undecodable_image")
    assert "f0.png" in body["error"]["message"]


def test_400_malformed_multipart(client):
    response = client.post("/digits", content=b"--xyz\r\nnot a header\r\n\r\n",
                           headers={"content-type": "multipart/form-data; boundary=abc"})
    assert response.status_code in (400, 422)
    assert response.json()["error"]["code"] in ("bad_request", "invalid_parameters")


def test_413_request_too_large(make_client):
    client = make_client(max_request_bytes=20_000)
    noise = np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8)
    assert_error(client.post("/digits", files=files_of(png_bytes(noise))), 413, "payload_too_large")


def test_413_decompression_bomb(client):
    body = assert_error(client.post("/digits", files=files_of(png_bomb(20000, 20000))), 413, "image_too_large")
    assert "pixels" in body["error"]["message"]


def test_415_not_an_image(client):
    assert_error(client.post("/digits", files=files_of(b"hello, world", content_type="text/plain")),
                 415, "unsupported_media_type")


def test_415_not_multipart(client):
    assert_error(client.post("/digits", json={"file": "x"}), 415, "unsupported_media_type")


@pytest.mark.parametrize("params", [{"top_k": 0}, {"top_k": 11}, {"top_k": "many"}, {"version": ""}])
def test_422_invalid_parameters(client, mnist_test, params):
    body = assert_error(client.post("/digits", params=params, files=files_of(png_bytes(mnist_test[0][0]))),
                        422, "invalid_parameters")
    assert next(iter(params)) in body["error"]["message"]


def test_422_missing_file_part(client):
    response = client.post("/digits", files=[("image", ("a.png", b"x", "image/png"))])
    assert_error(response, 422, "invalid_parameters")


def test_422_too_many_files(make_client, mnist_test):
    client = make_client(max_files_per_request=2)
    payload = png_bytes(mnist_test[0][0])
    assert_error(client.post("/digits", files=files_of(payload, payload, payload)), 422, "invalid_parameters")


def test_404_unknown_version(client, mnist_test):
    body = assert_error(client.post("/digits", params={"version": "v999"}, files=files_of(png_bytes(mnist_test[0][0]))),
                        404, "unknown_version")
    assert "production" in body["error"]["message"]


def test_service_keeps_serving_after_bad_inputs(client, mnist_test):
    bad = [b"", b"GIF89a", png_bomb(30000, 30000), b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, b"BM" + b"\xff" * 40]
    for payload in bad:
        response = client.post("/digits", files=files_of(payload))
        assert 400 <= response.status_code < 500, (payload[:10], response.status_code, response.text)
    ok = client.post("/digits", files=files_of(png_bytes(mnist_test[0][0])))
    assert ok.status_code == 200


def test_a_decoder_crash_on_one_upload_is_its_400_and_spares_its_batch(client, mnist_test, monkeypatch):
    """PIL raises kinds beyond OSError/ValueError on some corrupt files (struct.error was one): such an
    item gets a 400, the other items of its micro-batch (other clients) their answers."""
    import struct

    import app.kinds.image_classification as kind_module
    from app.settings import Settings

    real = kind_module.image_to_array

    def crashing(data, *args, **kwargs):
        if data.startswith(b"CRASH"):
            raise struct.error("required argument is not an integer")
        return real(data, *args, **kwargs)

    monkeypatch.setattr(kind_module, "image_to_array", crashing)
    model = load_model(ModelRegistry(), "digits", "production", torch.device("cpu"))
    kind = kind_module.ImageClassification(Settings())
    items = [kind_module.ImageItem(png_bytes(mnist_test[0][0]), "image/png"), kind_module.ImageItem(b"CRASH", "image/png")]
    good, bad = kind.predict(model, items)
    assert isinstance(good, kind_module.Classified) and isinstance(bad, UndecodableImageError)
    assert_error(client.post("/digits", files=files_of(b"CRASH")), 400, "undecodable_image")
    assert client.post("/digits", files=files_of(png_bytes(mnist_test[0][0]))).status_code == 200


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "1", "CMYK", "I;16"])
def test_any_image_mode_is_accepted(client, mode):
    image = Image.new("L", (40, 40), 255)
    image.paste(0, (15, 5, 25, 35))
    buffer = io.BytesIO()
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    image.convert(mode).save(buffer, format=fmt)
    response = client.post("/digits", files=files_of(buffer.getvalue()))
    assert response.status_code == 200, response.text


def test_413_is_answered_from_content_length_before_reading(make_client):
    client = make_client(max_request_bytes=1000)
    response = client.post("/digits", content=b"x" * 5000,
                           headers={"content-type": "multipart/form-data; boundary=abc"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


def test_debug_returns_the_28x28_image_the_model_saw(client, mnist_test):
    import base64

    photo = VARIANTS["off_centre"](mnist_test[0][3], np.random.default_rng(0))
    prediction = client.post("/digits", params={"debug": "true"},
                             files=[("file", ("p.jpg", photo, "image/jpeg"))]).json()["predictions"][0]
    header, encoded = prediction["input_image"].split(",", 1)
    assert header == "data:image/png;base64"
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))
    assert seen.shape == (28, 28) and seen.max() > 200 and seen[0].max() == 0  # white ink, dark border
    plain = client.post("/digits", files=[("file", ("p.jpg", photo, "image/jpeg"))]).json()["predictions"][0]
    assert plain["input_image"] is None
    assert client.post("/digits", params={"debug": "maybe"}, files=files_of(photo)).status_code == 422


def test_a_subclass_of_a_domain_error_keeps_its_status():
    from app.errors import domain_status
    from models.registry import InvalidManifestError

    class MissingPackage(InvalidManifestError):
        pass

    assert domain_status(MissingPackage("pip install x")) == (409, "invalid_model")
    assert domain_status(RuntimeError("bug")) is None
