"""POST /components through the real app and the committed default model."""

from __future__ import annotations

from tests.app.test_digits import assert_error
from tests.app.test_imagenet import jpeg_part, photo
from tests.conftest import COMPONENTS_DIR


def test_validation_photos_are_classified_with_labels_and_unknown_flag(client):
    photos = sorted((COMPONENTS_DIR / "validation" / "relay").glob("*.jpg"))[:2] + \
        sorted((COMPONENTS_DIR / "validation" / "mica_capacitor").glob("*.jpg"))[:2]
    response = client.post("/components", files=[jpeg_part(p.read_bytes(), p.name) for p in photos])
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == ["relay", "relay", "mica_capacitor", "mica_capacitor"]
    threshold = client.get("/models/components/production").json()["manifest"]["unknown_threshold"]
    assert all(len(p["top"]) == 3 and p["unknown"] is (p["confidence"] < threshold) for p in predictions)
    assert sum(p["unknown"] for p in predictions) <= 1  # ~5% of good validation predictions fall below by design


def test_a_photo_that_is_no_component_is_flagged_unknown(client):
    threshold = client.get("/models/components/production").json()["manifest"]["unknown_threshold"]
    response = client.post("/components", files=[jpeg_part(photo("volcano.jpg"), "volcano.jpg")])
    prediction = response.json()["predictions"][0]
    assert prediction["unknown"] is True and prediction["confidence"] < threshold


def test_components_error_paths(client):
    assert_error(client.post("/components", params={"top_k": 11}, files=[jpeg_part(photo("plate.jpg"))]),
                 422, "invalid_parameters")
    assert_error(client.post("/components", params={"version": "nope"}, files=[jpeg_part(photo("plate.jpg"))]),
                 404, "unknown_version")
    assert_error(client.post("/components", files=[jpeg_part(b"\xff\xd8\xff garbage")]), 400, "undecodable_image")
    assert_error(client.post("/components", files=[jpeg_part(b"hello", "a.txt", "text/plain")]),
                 415, "unsupported_media_type")
