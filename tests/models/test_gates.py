"""The promotion gates (`models.registry.gates`): each reason on real manifests of the committed store, and
the `evaluation` block they compare."""

from __future__ import annotations

import math
from typing import Any

import pytest

from models.registry import InvalidManifestError, Manifest, ModelRegistry
from models.registry.gates import compatibility_refusals, metric_refusals, promotion_refusals
from models.registry.schema import parse_manifest


def variant(manifest: Manifest, **changes: Any) -> Manifest:
    """`manifest` with `changes`, validated as a stored one would be."""
    return parse_manifest({**manifest.stored(), **changes})


def test_committed_manifests_name_their_evaluation_metric(registry: ModelRegistry):
    expected = {"digits": ("test_accuracy", True), "components": ("validation_accuracy", True)}
    for task in registry.tasks():
        for version in registry.versions(task):
            manifest = registry.manifest(task, version)
            assert manifest.evaluation is not None, (task, version)
            if task in expected:
                assert (manifest.evaluation.metric, manifest.evaluation.higher_is_better) == expected[task]
    rnn = {registry.manifest("rnn", v).evaluation.metric for v in registry.versions("rnn")}
    assert rnn == {"held_out_bits_per_char", "hit_top1_prefix2"}
    evaluations = [registry.manifest("imagenet", v).evaluation for v in registry.versions("imagenet")]
    imagenet = {(e.metric, e.higher_is_better) for e in evaluations}
    assert imagenet == {("samples_top1_error_strict", False), ("dev_top1_error", False)}  # 10 samples; the dev set
    assert registry.manifest("imagenet").evaluation.metric == "dev_top1_error"


def test_the_evaluation_metric_must_be_a_recorded_number(registry: ModelRegistry):
    digits = registry.manifest("digits")
    for metric in ("top1", "dataset", "report"):
        with pytest.raises(InvalidManifestError, match=f"evaluation.metric '{metric}' is not a number in metrics; "
                                                       "numeric metrics: best_dev_accuracy, best_dev_loss, test_accuracy"):
            variant(digits, evaluation={"metric": metric, "higher_is_better": True})
    with pytest.raises(InvalidManifestError, match="evaluation.higher_is_better"):
        variant(digits, evaluation={"metric": "test_accuracy"})


def test_metric_gate_honours_direction_and_tolerance(registry: ModelRegistry):
    digits = registry.manifest("digits")  # test_accuracy 0.9953, higher is better
    worse = variant(digits, metrics={**digits.metrics, "test_accuracy": 0.9853})
    better = variant(digits, metrics={**digits.metrics, "test_accuracy": 0.999})
    [reason] = promotion_refusals(digits, worse, 0.0)
    assert reason == ("test_accuracy 0.9853 is worse than the incumbent's 0.9953 by 0.01 (higher is better; "
                      "tolerance 0)")
    assert promotion_refusals(digits, worse, 0.01) == [], "exactly at the tolerance passes"
    assert promotion_refusals(digits, better, 0.0) == promotion_refusals(None, worse, 0.0) == []
    imagenet = registry.manifest("imagenet")  # dev_top1_error, lower is better
    raised = imagenet.metrics["dev_top1_error"] + 0.1
    higher_error = variant(imagenet, metrics={**imagenet.metrics, "dev_top1_error": raised})
    assert "lower is better" in metric_refusals(imagenet, higher_error, 0.05)[0]
    assert metric_refusals(higher_error, imagenet, 0.0) == []
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0"):
        promotion_refusals(digits, worse, -0.1)
    with pytest.raises(ValueError):
        promotion_refusals(digits, worse, math.nan)


def test_different_or_missing_evaluations(registry: ModelRegistry):
    digits = registry.manifest("digits")
    by_loss = variant(digits, evaluation={"metric": "best_dev_loss", "higher_is_better": False})
    [reason] = metric_refusals(digits, by_loss, 0.0)
    assert reason.startswith("evaluated by different metrics: the incumbent by test_accuracy (higher is better), "
                             "the candidate by best_dev_loss (lower is better)")
    unevaluated = parse_manifest({k: v for k, v in variant(digits, metrics={"test_accuracy": 0.1}).stored().items()
                                  if k != "evaluation"})
    assert metric_refusals(digits, unevaluated, 0.0) == metric_refusals(unevaluated, digits, 0.0) == []


def test_label_and_input_gates(registry: ModelRegistry):
    digits = registry.manifest("digits")
    renamed = variant(digits, labels=["zero", *digits.labels[1:]])
    assert compatibility_refusals(digits, renamed) == [
        "labels differ: 1 of 10 positions changed; first at index 0: '0' -> 'zero'; added 'zero'; removed '0'"]
    more = variant(digits, labels=[*digits.labels, "10", "11", "12", "13"])
    assert compatibility_refusals(digits, more) == [
        "labels differ: 10 labels -> 14; first at index 10: None -> '10'; added '10', '11', '12' and 1 more"]
    wider = variant(digits, preprocessing={**digits.preprocessing, "size": [32, 32], "channels": 3})
    assert compatibility_refusals(digits, wider) == [
        "input signature differs: preprocessing.size [28, 28] -> [32, 32], preprocessing.channels 1 -> 3"]
    reasons = promotion_refusals(digits, registry.manifest("rnn"), 0.0)
    assert reasons[0] == "kind differs: the incumbent is image-classification, the candidate text-completion"
    assert reasons[1].startswith("input signature differs: preprocessing.kind 'digit' -> 'chars'")
    assert reasons[2].startswith("labels differ: 10 labels -> 30") and "evaluated by different metrics" in reasons[3]
    assert compatibility_refusals(digits, variant(digits, title="Digits v2")) == []
