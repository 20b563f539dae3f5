"""`app.prediction_log`: the JSON lines it writes, sampling, rotation, dropping when the writer is stuck, close."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.prediction_log import PredictionLog, input_sha256, process_path
from app.settings import Settings

INPUTS = [{"sha256": "ab" * 32, "top": [{"label": "7", "probability": 0.9}, {"label": "1", "probability": 0.05}]}]


def new_log(path: Path, **overrides: object) -> PredictionLog:
    options = {"sample_rate": 1.0, "max_bytes": 1 << 20, "backups": 2, **overrides}
    return PredictionLog(path, **options)  # type: ignore[arg-type]


def record(log: PredictionLog, n: int = 0, inputs: list[dict] = INPUTS) -> None:
    log.record(request_id=f"req-{n}", task="digits", version="v1", alias="production", latency_s=0.0123456,
               inputs=inputs)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_record_is_one_json_line_in_this_processs_file(tmp_path: Path):
    log = new_log(tmp_path / "logs" / "predictions.jsonl")
    assert log.path == tmp_path / "logs" / f"predictions.{os.getpid()}.jsonl"
    assert not log.path.exists(), "the file appears with the first record"
    before = datetime.now(timezone.utc)
    record(log, 1)
    log.record(request_id="req-2", task="digits", version="v2", alias=None, latency_s=0.5, inputs=[])
    log.close()
    first, second = lines(log.path)
    assert list(first) == ["time", "request_id", "task", "version", "alias", "latency_ms", "inputs"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"]), first["time"]
    assert abs((datetime.fromisoformat(first["time"]) - before).total_seconds()) < 5
    assert first | {"time": None} == {"time": None, "request_id": "req-1", "task": "digits", "version": "v1",
                                      "alias": "production", "latency_ms": 12.346, "inputs": INPUTS}
    assert (second["alias"], second["latency_ms"], second["inputs"]) == (None, 500.0, [])
    assert (log.dropped, log.failed) == (0, 0)


def test_input_sha256_hashes_bytes_and_text_as_utf8():
    assert input_sha256(b"abc") == hashlib.sha256(b"abc").hexdigest() == input_sha256("abc")
    assert input_sha256("é") == hashlib.sha256("é".encode()).hexdigest()
    assert process_path(Path("a/predictions.jsonl"), 42) == Path("a/predictions.42.jsonl")
    assert process_path(Path("a/predictions"), 42) == Path("a/predictions.42")


def test_sampling_logs_about_the_rate(tmp_path: Path):
    log = new_log(tmp_path / "p.jsonl", sample_rate=0.5)
    try:
        random.seed(1234)
        drawn = sum(log.sampled() for _ in range(2000))
        assert 900 < drawn < 1100, drawn  # binomial(2000, 0.5): sd 22
        full = new_log(tmp_path / "q.jsonl")
        assert all(full.sampled() for _ in range(200))
        full.close()
    finally:
        log.close()


def test_rotation_keeps_the_configured_backups(tmp_path: Path):
    log = new_log(tmp_path / "p.jsonl", max_bytes=600, backups=2)
    for n in range(40):
        record(log, n)
    log.close()
    files = sorted(tmp_path.iterdir())
    assert [p.name for p in files] == [log.path.name, f"{log.path.name}.1", f"{log.path.name}.2"]
    for path in files:
        assert path.stat().st_size <= 600
        assert all(line["task"] == "digits" for line in lines(path)), "whole lines only"
    newest = lines(log.path)
    assert newest[-1]["request_id"] == "req-39", "the live file holds the latest records"
    kept = [line["request_id"] for path in reversed(files) for line in lines(path)]
    assert kept == [f"req-{n}" for n in range(40 - len(kept), 40)], "backups hold the records just before, in order"


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path):
    """The writer is stuck opening a FIFO nobody reads yet: records beyond the queue are dropped at once."""
    fifo = process_path(tmp_path / "p.jsonl")
    os.mkfifo(fifo)
    log = new_log(tmp_path / "p.jsonl", queue_max=5)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    try:
        started = time.perf_counter()
        for n in range(51):
            record(log, n)
        assert time.perf_counter() - started < 1.0, "record() never waits for the writer"
        assert 45 <= log.dropped <= 46, "5 queued, at most 1 taken by the stuck writer"
    finally:
        reader.start()  # unblocks the writer
        log.close()
        reader.join(10)
    written = [json.loads(line) for line in received[0].splitlines()]
    assert len(written) == 51 - log.dropped and written[0]["request_id"] == "req-0"


def test_close_is_idempotent_and_later_records_are_dropped(tmp_path: Path):
    log = new_log(tmp_path / "p.jsonl")
    record(log)
    log.close()
    log.close()
    record(log, 2)
    assert log.dropped == 1 and len(lines(log.path)) == 1


def test_settings_build_the_log_or_none(tmp_path: Path):
    assert PredictionLog.from_settings(Settings()) is None
    settings = Settings(prediction_log=tmp_path / "p.jsonl", prediction_log_sample_rate=0.25,
                        prediction_log_max_bytes=1000, prediction_log_backups=1)
    log = PredictionLog.from_settings(settings)
    assert log is not None and log.sample_rate == 0.25 and log.path.parent == tmp_path
    log.close()
    for bad in ({"prediction_log_sample_rate": 0}, {"prediction_log_sample_rate": 1.5},
                {"prediction_log_backups": 0}, {"prediction_log_max_bytes": 0}):
        with pytest.raises(ValidationError):
            Settings(**bad)
    with pytest.raises(ValueError, match=r"sample_rate must be in \(0, 1\]"):
        new_log(tmp_path / "x.jsonl", sample_rate=2.0)
    with pytest.raises(ValueError, match="without a backup"):
        new_log(tmp_path / "x.jsonl", backups=0)


def test_the_service_logs_sampled_predictions_that_the_drift_check_reads(make_client, registry, mnist_test, tmp_path,
                                                                           capsys):
    from models.registry.__main__ import main as registry_main
    from tests.conftest import png_bytes

    path = tmp_path / "predictions.jsonl"
    client = make_client(prediction_log=path)
    images, _ = mnist_test
    pngs = [png_bytes(images[i]) for i in range(6)]
    for i, png in enumerate(pngs):
        response = client.post("/digits", files=[("file", ("d.png", png, "image/png"))], headers={"X-Request-ID": f"p-{i}"})
        assert response.status_code == 200
    served = response.json()
    client.app.state.server.prediction_log.close()  # flush (the client's shutdown would too)
    lines = [json.loads(line) for line in process_path(path).read_text().splitlines()]
    assert [line["request_id"] for line in lines] == [f"p-{i}" for i in range(6)]
    last = lines[-1]
    assert last["task"] == "digits" and last["version"] == registry.resolve("digits") and last["alias"] == "production"
    assert last["inputs"][0]["sha256"] == hashlib.sha256(pngs[-1]).hexdigest()
    assert last["inputs"][0]["top"][0] == {"label": served["predictions"][0]["label"],
                                           "probability": served["predictions"][0]["confidence"]}
    assert len(last["inputs"][0]["top"]) == 5 and last["latency_ms"] > 0
    capsys.readouterr()
    log_file = str(process_path(path))
    assert registry_main(["--store", str(registry.root), "drift", "digits", "--log", log_file,
                          "--baseline-log", log_file, "--max-tvd", "0"]) == 0  # a window against itself: no drift
    assert "total variation" in capsys.readouterr().out.lower()
