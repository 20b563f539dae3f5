"""`models.registry.drift`: baselines, profiles of a real prediction log, the comparison, and the CLI's exit codes
against a manifest baseline in a temporary store and against an earlier window of the log."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.prediction_log import PredictionLog
from models.networks import build_network
from models.preprocessing import digit_preset
from models.registry import ModelRegistry
from models.registry.drift import compare, drift_main, format_report, logged_profile, prediction_baseline, read_log

REPO = Path(__file__).resolve().parents[2]
LABELS = [str(i) for i in range(10)]
BASELINE = {"dataset": "MNIST test (first 100)", "examples": 100, "class_mix": {"0": 0.5, "1": 0.5,
            **{str(i): 0.0 for i in range(2, 10)}}, "mean_confidence": 0.9}


def profile(mix: dict[str, float], confidence: float = 0.9) -> dict:
    return {"dataset": "t", "examples": 10, "class_mix": mix, "mean_confidence": confidence}


def test_baseline_is_the_top1_mix_and_mean_confidence_of_the_probabilities():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5]])
    baseline = prediction_baseline(probabilities, ["a", "b", "c"], dataset="val")
    assert baseline == {"dataset": "val", "examples": 4, "class_mix": {"a": 0.5, "b": 0.25, "c": 0.25},
                        "mean_confidence": pytest.approx((0.7 + 0.6 + 0.8 + 0.5) / 4)}
    assert prediction_baseline(np.eye(3)[[0, 0]], ["a", "b", "c"], dataset="v")["class_mix"]["c"] == 0.0
    with pytest.raises(ValueError, match="N x 2"):
        prediction_baseline(probabilities, ["a", "b"], dataset="val")


def test_identical_profiles_do_not_drift():
    report = compare(BASELINE, dict(BASELINE))
    assert report.tvd == 0 and abs(report.psi) < 1e-12 and report.confidence_shift == 0 and not report.new_classes


def test_a_shifted_mix_gives_its_total_variation_and_stability_index():
    report = compare(profile({"a": 0.5, "b": 0.5}, 0.9), profile({"a": 0.8, "b": 0.2}, 0.7))
    assert report.tvd == pytest.approx(0.3)
    assert report.psi == pytest.approx(0.3 * math.log(0.8 / 0.5) - 0.3 * math.log(0.2 / 0.5))
    assert report.confidence_shift == pytest.approx(-0.2)
    assert [(c.label, round(c.difference, 6)) for c in report.classes] == [("a", 0.3), ("b", -0.3)]
    new = compare(profile({"a": 0.5, "b": 0.5, "c": 0.0}), profile({"a": 0.5, "b": 0.3, "c": 0.1, "d": 0.1}))
    assert new.tvd == pytest.approx(0.2) and new.new_classes == ["c", "d"] and math.isfinite(new.psi)
    text = format_report(new)
    assert "total variation distance  0.2000" in text and "never predicted: c, d" in text


def write_log(path: Path, version: str, labels: list[str], task: str = "digits") -> Path:
    """A real log written by `PredictionLog`, one request per label (top-1 that label at 0.9); returns its file."""
    log = PredictionLog(path, sample_rate=1.0, max_bytes=1 << 20, backups=1)
    for n, label in enumerate(labels):
        log.record(request_id=f"r{n}", task=task, version=version, alias=None, latency_s=0.001,
                   inputs=[{"sha256": "0" * 64, "top": [{"label": label, "probability": 0.9},
                                                         {"label": "9", "probability": 0.05}]}])
    log.close()
    return log.path


def test_read_log_filters_and_counts_torn_lines(tmp_path: Path):
    live = write_log(tmp_path / "a" / "p.jsonl", "v1", ["0", "1", "1"])
    rotated = tmp_path / "a" / f"{live.name}.1"
    rotated.write_text(live.read_text() + '{"task": "digits", "version": "v2", "inputs": []}\nnot json\n')
    with live.open("a") as handle:
        handle.write('{"time": "2026-01-01T00:00:00.000Z", "task": "dig')  # torn: being written
    records = read_log([live, rotated], "digits", "v1")
    assert len(records) == 6 and records.skipped == 2
    assert records.seen == {("digits", "v1"): 6, ("digits", "v2"): 1}
    observed = logged_profile(records)
    assert observed["examples"] == 6 and observed["class_mix"] == {"0": pytest.approx(1 / 3), "1": pytest.approx(2 / 3)}
    assert observed["mean_confidence"] == pytest.approx(0.9)


@pytest.fixture()
def digits_store(tmp_path: Path) -> Path:
    """A store with digits versions "old" (production, no baseline) and "new" (with `BASELINE`)."""
    root = tmp_path / "store"
    registry = ModelRegistry(root)
    for version, metrics in (("old", {"test_accuracy": 0.5}), ("new", {"prediction_baseline": BASELINE})):
        registry.register("digits", build_network("lenet5"), {
            "kind": "image-classification", "architecture": {"name": "lenet5", "args": {"num_classes": 10}},
            "labels": LABELS, "preprocessing": digit_preset(), "metrics": metrics, "training": {}, "lineage": {}},
            version=version)
    registry.promote("digits", "old")
    return root


def test_cli_against_the_manifest_baseline(tmp_path: Path, digits_store: Path, capsys: pytest.CaptureFixture[str]):
    same = write_log(tmp_path / "same" / "p.jsonl", "new", ["0", "1"] * 20)
    shifted = write_log(tmp_path / "shifted" / "p.jsonl", "new", ["0", "0", "0", "1"] * 10)
    other = write_log(tmp_path / "other" / "p.jsonl", "old", ["5"] * 5)
    base = ["digits", "--store", str(digits_store)]

    assert drift_main([*base, "--log", str(same), str(other), "--max-tvd", "0.05"]) == 0, "most records: new"
    out = capsys.readouterr().out
    assert "digits/new: MNIST test (first 100)" in out and "total variation distance  0.0000" in out

    assert drift_main([*base, "--log", str(shifted), "--version", "new", "--max-tvd", "0.1", "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["tvd"] == pytest.approx(0.25) and report["observed_examples"] == 40
    assert {c["label"]: c["difference"] for c in report["classes"]}["0"] == pytest.approx(0.25)
    assert "exceeds --max-tvd 0.1" in captured.err

    assert drift_main([*base, "--log", str(other), "--version", "production"]) == 2
    assert "digits/old records no metrics['prediction_baseline']" in capsys.readouterr().err
    assert drift_main([*base, "--log", str(other)]) == 2, "the log's version, old, has no baseline either"
    assert "--baseline-log FILE" in capsys.readouterr().err
    assert drift_main([*base, "--log", str(same), "--version", "nosuch"]) == 2
    assert "no version or alias 'nosuch'" in capsys.readouterr().err
    assert drift_main(["rnn", "--store", str(digits_store), "--log", str(same)]) == 2
    assert "no records of task 'rnn'; it holds: digits/new (40)" in capsys.readouterr().err
    assert drift_main([*base, "--log", str(tmp_path / "missing.jsonl")]) == 2


def test_cli_against_an_earlier_window_of_the_log(tmp_path: Path, digits_store: Path,
                                                  capsys: pytest.CaptureFixture[str]):
    before = write_log(tmp_path / "before" / "p.jsonl", "old", ["5", "6"] * 10)
    after = write_log(tmp_path / "after" / "p.jsonl", "old", ["5"] * 15 + ["6"] * 5)
    args = ["digits", "--store", str(digits_store), "--log", str(after), "--baseline-log", str(before)]
    assert drift_main([*args, "--max-tvd", "0.3"]) == 0
    assert "total variation distance  0.2500" in capsys.readouterr().out
    assert drift_main([*args, "--max-tvd", "0.2"]) == 1
    assert drift_main([*args, "--version", "new"]) == 2, "no record of version new on either side"
    with pytest.raises(SystemExit) as refused:
        drift_main([*args, "--max-tvd", "1.5"])
    assert refused.value.code == 2 and "--max-tvd must be between 0 and 1" in capsys.readouterr().err


def test_python_m_runs_the_cli(tmp_path: Path, digits_store: Path):
    log = write_log(tmp_path / "p.jsonl", "new", ["0", "1"])
    done = subprocess.run([sys.executable, "-m", "models.registry.drift", "digits", "--store", str(digits_store),
                           "--log", str(log), "--json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tvd"] == pytest.approx(0.0)
