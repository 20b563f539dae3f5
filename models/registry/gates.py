"""Promotion gates: why a candidate should not replace the version an alias serves.

Each function returns human-readable reasons, one per problem; an empty list means the gate passes.
Compatibility (kind, input signature, labels) protects clients: a changed label list or input changes
what their requests mean. The metric gate protects quality: the candidate's evaluation metric may not be
worse than the incumbent's by more than an absolute tolerance. Verification (checksums) is not a gate:
it fails first, with its own error.
"""

from __future__ import annotations

import math
from itertools import zip_longest

from models.registry.schema import Evaluation, Manifest

INPUT_FIELDS = ("kind", "size", "channels")  # the preprocessing fields a client's input depends on
SHOWN = 3  # labels named per difference
EPSILON = 1e-9  # metrics are stored rounded: 0.9953 - 0.9853 must count as 0.01, not 0.010000000000000009


def promotion_refusals(incumbent: Manifest | None, candidate: Manifest, tolerance: float) -> list[str]:
    """Every reason `candidate` should not replace `incumbent` (none when there is no incumbent).
    `tolerance` (>= 0) is how much worse, in the evaluation metric's own units, still passes."""
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, not {tolerance!r}")
    if incumbent is None:
        return []
    return compatibility_refusals(incumbent, candidate) + metric_refusals(incumbent, candidate, tolerance)


def compatibility_refusals(incumbent: Manifest, candidate: Manifest) -> list[str]:
    """Differences that would change what clients' requests mean: kind, input signature, labels."""
    reasons = []
    if incumbent.kind != candidate.kind:
        reasons.append(f"kind differs: the incumbent is {incumbent.kind}, the candidate {candidate.kind}")
    old, new = incumbent.preprocessing, candidate.preprocessing
    changed = [f"preprocessing.{key} {old.get(key)!r} -> {new.get(key)!r}" for key in INPUT_FIELDS
               if old.get(key) != new.get(key)]
    if changed:
        reasons.append(f"input signature differs: {', '.join(changed)}")
    labels = labels_difference(incumbent.labels, candidate.labels)
    if labels:
        reasons.append(labels)
    return reasons


def labels_difference(old: list[str], new: list[str]) -> str | None:
    """A one-line account of how two label lists differ (counts, first difference, a few added and
    removed names), None when they are equal."""
    if old == new:
        return None
    if len(old) != len(new):
        parts = [f"{len(old)} labels -> {len(new)}"]
    else:
        parts = [f"{sum(a != b for a, b in zip(old, new))} of {len(old)} positions changed"]
    index, (was, now) = next((i, pair) for i, pair in enumerate(zip_longest(old, new)) if pair[0] != pair[1])
    parts.append(f"first at index {index}: {was!r} -> {now!r}")
    added, removed = [x for x in new if x not in set(old)], [x for x in old if x not in set(new)]
    for what, names in (("added", added), ("removed", removed)):
        if names:
            more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
            parts.append(f"{what} {', '.join(map(repr, names[:SHOWN]))}{more}")
    return f"labels differ: {'; '.join(parts)}"


def metric_refusals(incumbent: Manifest, candidate: Manifest, tolerance: float) -> list[str]:
    """The evaluation metric is worse than the incumbent's by more than `tolerance`, or the two are
    evaluated by different metrics; none when either has no `evaluation` block."""
    old, new = incumbent.evaluation, candidate.evaluation
    if old is None or new is None:
        return []
    if old != new:
        return [f"evaluated by different metrics: the incumbent by {_describe(old)}, the candidate by "
                f"{_describe(new)}; they cannot be compared"]
    before, after = incumbent.metrics[old.metric], candidate.metrics[new.metric]
    worse_by = before - after if old.higher_is_better else after - before
    if worse_by <= tolerance + EPSILON:
        return []
    return [f"{new.metric} {after:g} is worse than the incumbent's {before:g} by {worse_by:.6g} "
            f"({_direction(new)}; tolerance {tolerance:g})"]


def _direction(evaluation: Evaluation) -> str:
    return "higher is better" if evaluation.higher_is_better else "lower is better"


def _describe(evaluation: Evaluation) -> str:
    return f"{evaluation.metric} ({_direction(evaluation)})"
