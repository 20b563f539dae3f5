"""POST /rnn/complete through the real ASGI app and the committed models: one test per status path."""

from __future__ import annotations

import pytest

from tests.app.test_digits import assert_error

SEED = {"h": "hello", "g": "green", "s": "start"}


def complete(client, **body):
    return client.post("/rnn/complete", json=body)


@pytest.mark.parametrize("strategy", ["beam", "greedy"])
def test_seed_version_gives_the_reports_words(client, strategy):
    for prefix, word in SEED.items():
        response = complete(client, prefix=prefix, version="seed", strategy=strategy)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["completions"][0]["text"] == word and body["completions"][0]["ended"]
        assert body["model"] == {"task": "rnn", "version": client.app.state.server.resolver.resolve("rnn", "seed")}


def test_english_completions_are_words_with_the_prefix_ordered_by_probability(client, registry):
    body = complete(client, prefix="Hel", num_completions=5).json()  # case normalised as trained
    assert body["model"]["version"] == registry.resolve("rnn", "production") and body["prefix"] == "hel"
    texts = [c["text"] for c in body["completions"]]
    probabilities = [c["probability"] for c in body["completions"]]
    assert len(texts) == 5 and all(t.startswith("hel") for t in texts) and "help" in texts[:3]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1


def test_defaults_are_beam_with_three_completions(client):
    assert len(complete(client, prefix="th").json()["completions"]) == 3


def test_sampling_with_a_seed_is_reproducible(client):
    request = {"prefix": "pro", "strategy": "sample", "num_completions": 4, "temperature": 1.5, "top_k": 5, "seed": 11}
    first, second = complete(client, **request).json(), complete(client, **request).json()
    assert first == second and all(c["text"].startswith("pro") for c in first["completions"])


def test_max_length_bounds_every_completion(client):
    body = complete(client, prefix="inter", max_length=8, num_completions=5).json()
    assert all(len(c["text"]) <= 8 for c in body["completions"])


def test_explicit_version_id_and_prometheus_counts(client, registry):
    version = registry.resolve("rnn", "seed")
    assert complete(client, prefix="g", version=version).json()["model"]["version"] == version
    metrics = client.get("/metrics").text
    assert f'modelhouse_predictions_total{{alias="",task="rnn",version="{version}"}} 1.0' in metrics


def test_layer_summary_of_the_production_model(client):
    body = client.get("/models/rnn/production").json()
    assert body["manifest"]["preprocessing"]["kind"] == "chars"
    assert [row["type"] for row in body["summary"]["layers"]] == ["Embedding", "GRU", "Dropout", "Linear"]


@pytest.mark.parametrize(("body", "field"), [
    ({"prefix": ""}, "prefix"),
    ({"prefix": "a" * 33}, "prefix"),
    ({"prefix": "h1"}, "prefix"),  # outside the english vocabulary
    ({"prefix": "x", "version": "seed"}, "prefix"),  # the seed toy knows ten letters
    ({"prefix": "café"}, "prefix"),
    ({}, "prefix"),
    ({"prefix": "he", "num_completions": 0}, "num_completions"),
    ({"prefix": "he", "num_completions": 1000}, "num_completions"),
    ({"prefix": "he", "max_length": 1}, "max_length"),
    ({"prefix": "hello", "max_length": 5}, "max_length"),
    ({"prefix": "he", "max_length": 10_000}, "max_length"),
    ({"prefix": "he", "strategy": "nucleus"}, "strategy"),
    ({"prefix": "he", "temperature": 0}, "temperature"),
    ({"prefix": "he", "top_k": -1}, "top_k"),
    ({"prefix": "he", "beam_width": 500}, "beam_width"),
    ({"prefix": "he", "seed": -3}, "seed"),
    ({"prefix": "he", "version": ""}, "version"),
    ({"prefix": "he", "prefixx": "typo"}, "prefixx"),
])
def test_422_names_the_offending_field(client, body, field):
    error = assert_error(complete(client, **body), 422, "invalid_parameters")
    assert error["error"]["message"].startswith(field)


def test_422_body_that_is_not_json(client):
    response = client.post("/rnn/complete", content=b"{prefix: hel", headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_parameters")


def test_404_unknown_version(client):
    body = assert_error(complete(client, prefix="he", version="v999"), 404, "unknown_version")
    assert "seed" in body["error"]["message"]


def test_409_when_the_weights_do_not_match_their_checksum(client, registry):
    (registry.version_dir("rnn", "seed") / "weights.safetensors").write_bytes(b"corrupt")
    assert_error(complete(client, prefix="h", version="seed"), 409, "checksum_mismatch")
