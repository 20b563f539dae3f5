"""Prediction drift: how the top-1 predictions a service logged compare with what the model predicted on its
evaluation split, or with an earlier window of the log.

A trainer stores `prediction_baseline(...)` of its validation/test probabilities in the manifest's
`metrics["prediction_baseline"]`; `app.prediction_log` writes the log. A profile (baseline or observed) is
`{"dataset", "examples", "class_mix": {label: fraction of top-1 predictions}, "mean_confidence"}`.
`compare` gives per-class differences, the total variation distance (half the sum of the absolute
differences: 0 same mix, 1 disjoint) and the population stability index. The CLI:
`python -m models.registry drift TASK --log FILE ... [--version V] [--baseline-log FILE ...] [--max-tvd X]`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.registry.errors import RegistryError
from models.registry.store import DEFAULT_ROOT, ModelRegistry

BASELINE_KEY = "prediction_baseline"  # where a manifest's metrics hold the baseline
PSI_EPSILON = 1e-4  # a class absent from one side counts as this fraction, so the PSI stays finite
SHOWN_CLASSES = 20  # format_report lists the classes that moved most, at most this many


class DriftError(ValueError):
    """A drift check that cannot run (no records, no baseline, a malformed profile); the CLI exits 2."""


def prediction_baseline(probabilities: Any, labels: list[str], *, dataset: str) -> dict[str, Any]:
    """The profile of N x C class `probabilities` (numpy, or anything `np.asarray` takes): the fraction of
    top-1 predictions per label (every label, zeros included) and the mean top-1 probability."""
    matrix = np.asarray(probabilities, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] != len(labels):
        raise ValueError(f"probabilities must be N x {len(labels)} (one column per label, N >= 1), "
                         f"got shape {matrix.shape}")
    counts = np.bincount(matrix.argmax(1), minlength=len(labels))
    n = matrix.shape[0]
    return {"dataset": dataset, "examples": int(n),
            "class_mix": {label: round(int(c) / n, 6) for label, c in zip(labels, counts)},
            "mean_confidence": round(float(matrix.max(1).mean()), 6)}


class LogRecords(list[dict[str, Any]]):
    """The records `read_log` kept (a list of dicts), with `skipped` (malformed or torn lines) and `seen`
    (lines per (task, version), whatever the filter)."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped = 0
        self.seen: Counter[tuple[str, str]] = Counter()


def read_log(paths: list[Path], task: str, version: str | None = None) -> LogRecords:
    """The records of `task` (and `version`) in the log files `paths`, in file order; rotated files
    (`*.jsonl.1`) read like any other. A line that is not a JSON record with a task, a version and a list
    of inputs (e.g. the torn last line of a file being written) is skipped and counted."""
    records = LogRecords()
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                record = _parse(line)
                if record is None:
                    if line.strip():  # blank lines are not damage
                        records.skipped += 1
                    continue
                records.seen[(record["task"], record["version"])] += 1
                if record["task"] == task and (version is None or record["version"] == version):
                    records.append(record)
    return records


def _parse(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    ok = (isinstance(record, dict) and isinstance(record.get("task"), str) and isinstance(record.get("version"), str)
          and isinstance(record.get("inputs"), list) and all(isinstance(i, dict) for i in record["inputs"]))
    return record if ok else None


def logged_profile(records: list[dict[str, Any]], *, dataset: str = "prediction log") -> dict[str, Any]:
    """The profile of the top-1 label and probability of every logged input (inputs without both are skipped:
    a failed input has no prediction)."""
    counts: Counter[str] = Counter()
    confidence = 0.0
    for record in records:
        for item in record["inputs"]:
            top = item.get("top")
            best = top[0] if isinstance(top, list) and top and isinstance(top[0], dict) else {}
            if "label" in best and isinstance(best.get("probability"), (int, float)):
                counts[str(best["label"])] += 1
                confidence += float(best["probability"])
    n = sum(counts.values())
    if n == 0:
        raise DriftError(f"{dataset}: no logged input has a top-1 prediction")
    return {"dataset": dataset, "examples": n, "class_mix": {label: c / n for label, c in sorted(counts.items())},
            "mean_confidence": confidence / n}


@dataclass(frozen=True)
class ClassDrift:
    label: str
    baseline: float
    observed: float

    @property
    def difference(self) -> float:
        return self.observed - self.baseline


@dataclass(frozen=True)
class DriftReport:
    """Observed vs baseline: per class, TVD, PSI, mean-confidence shift, classes the baseline never predicted."""

    baseline_dataset: str
    baseline_examples: int
    observed_dataset: str
    observed_examples: int
    classes: list[ClassDrift]
    tvd: float
    psi: float
    baseline_confidence: float
    observed_confidence: float
    new_classes: list[str] = field(default_factory=list)

    @property
    def confidence_shift(self) -> float:
        return self.observed_confidence - self.baseline_confidence

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, plus each class's difference and the confidence shift."""
        data = asdict(self)
        data["classes"] = [{**asdict(c), "difference": c.difference} for c in self.classes]
        data["confidence_shift"] = self.confidence_shift
        return data


def _mix(profile: dict[str, Any], name: str) -> tuple[dict[str, float], float]:
    """A profile's class mix and mean confidence, checked."""
    mix, confidence = profile.get("class_mix"), profile.get("mean_confidence")
    if not isinstance(mix, dict) or not mix or not isinstance(confidence, (int, float)):
        raise DriftError(f"the {name} profile needs a non-empty class_mix and a mean_confidence, "
                         f"has keys: {', '.join(sorted(profile)) or 'none'}")
    return {str(k): float(v) for k, v in mix.items()}, float(confidence)


def compare(baseline: dict[str, Any], observed: dict[str, Any]) -> DriftReport:
    """Per-class fractions (baseline's labels first, then labels only the log has), TVD and PSI over them."""
    base, base_conf = _mix(baseline, "baseline")
    seen, seen_conf = _mix(observed, "observed")
    labels = list(base) + [label for label in seen if label not in base]
    classes = [ClassDrift(label, base.get(label, 0.0), seen.get(label, 0.0)) for label in labels]
    tvd = 0.5 * sum(abs(c.difference) for c in classes)
    psi = sum((max(c.observed, PSI_EPSILON) - max(c.baseline, PSI_EPSILON))
              * math.log(max(c.observed, PSI_EPSILON) / max(c.baseline, PSI_EPSILON)) for c in classes)
    new = [c.label for c in classes if c.observed > 0 and c.baseline == 0]
    return DriftReport(str(baseline.get("dataset", "baseline")), int(baseline.get("examples", 0)),
                       str(observed.get("dataset", "observed")), int(observed.get("examples", 0)),
                       classes, tvd, psi, base_conf, seen_conf, new)


def format_report(report: DriftReport) -> str:
    """A readable table of the classes that moved most, then TVD, PSI, confidence and new classes."""
    moved = sorted((c for c in report.classes if c.baseline or c.observed), key=lambda c: -abs(c.difference))
    width = max([len("class")] + [len(c.label) for c in moved[:SHOWN_CLASSES]])
    lines = [f"baseline: {report.baseline_dataset} ({report.baseline_examples} examples)",
             f"observed: {report.observed_dataset} ({report.observed_examples} inputs)", "",
             f"{'class':<{width}}  {'baseline':>9}  {'observed':>9}  {'difference':>10}"]
    lines += [f"{c.label:<{width}}  {c.baseline:>9.2%}  {c.observed:>9.2%}  {c.difference:>+10.2%}"
              for c in moved[:SHOWN_CLASSES]]
    if len(moved) > SHOWN_CLASSES:
        lines.append(f"... and {len(moved) - SHOWN_CLASSES} more classes")
    lines += ["", f"total variation distance  {report.tvd:.4f}",
              f"population stability      {report.psi:.4f}",
              f"mean confidence           {report.baseline_confidence:.4f} -> {report.observed_confidence:.4f} "
              f"({report.confidence_shift:+.4f})"]
    if report.new_classes:
        lines.append(f"classes the baseline never predicted: {', '.join(report.new_classes)}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m models.registry drift", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task")
    p.add_argument("--log", type=Path, nargs="+", required=True, help="prediction log files (rotated ones too)")
    p.add_argument("--version", default=None, help="the version to check (against its manifest: an alias works "
                   "too); default: the version most logged records name")
    p.add_argument("--store", type=Path, default=DEFAULT_ROOT, help="registry root (default: %(default)s)")
    p.add_argument("--baseline-log", type=Path, nargs="+", default=None,
                   help="compare with the profile of these log files (an earlier window) instead of the manifest")
    p.add_argument("--max-tvd", type=float, default=None, help="exit 1 when the total variation distance exceeds this")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def _records(paths: list[Path], task: str, version: str | None, what: str) -> LogRecords:
    """`read_log` that fails (DriftError) naming what the files hold when nothing matches."""
    records = read_log(paths, task, version)
    if records.skipped:
        print(f"warning: {what}: skipped {records.skipped} malformed lines", file=sys.stderr)
    if not records:
        held = ", ".join(f"{t}/{v} ({n})" for (t, v), n in records.seen.most_common()) or "no records"
        raise DriftError(f"{what}: no records of task {task!r}{f' version {version!r}' if version else ''}; "
                         f"it holds: {held}")
    return records


def _manifest_baseline(store: Path, task: str, version: str) -> dict[str, Any]:
    """The `prediction_baseline` a version's manifest records."""
    baseline = ModelRegistry(store).manifest(task, version).metrics.get(BASELINE_KEY)
    if not isinstance(baseline, dict):
        raise DriftError(f"{task}/{version} records no metrics[{BASELINE_KEY!r}] (registered before trainers "
                         "recorded one?); compare with an earlier window of the log: --baseline-log FILE ...")
    return baseline


def run(args: argparse.Namespace) -> DriftReport:
    """The report `args` ask for (DriftError, RegistryError or OSError when it cannot be made)."""
    if args.baseline_log:
        observed = _records(args.log, args.task, args.version, "--log")
        baseline = logged_profile(_records(args.baseline_log, args.task, args.version, "--baseline-log"),
                                  dataset=f"--baseline-log {_names(args.baseline_log)}")
    else:
        version = ModelRegistry(args.store).resolve(args.task, args.version) if args.version else None
        observed = _records(args.log, args.task, version, "--log")
        if version is None:  # the log's main version: a baseline describes one version
            version = Counter(r["version"] for r in observed).most_common(1)[0][0]
            observed = [r for r in observed if r["version"] == version]
        baseline = _manifest_baseline(args.store, args.task, version)
        baseline = {**baseline, "dataset": f"{args.task}/{version}: {baseline.get('dataset', 'evaluation split')}"}
    return compare(baseline, logged_profile(observed, dataset=f"--log {_names(args.log)}"))


def _names(paths: list[Path]) -> str:
    """The files a profile came from, briefly."""
    return ", ".join(map(str, paths)) if len(paths) <= 3 else f"{paths[0]} and {len(paths) - 1} more files"


def drift_main(argv: list[str] | None = None) -> int:
    """The CLI: 0, 1 when `--max-tvd` is exceeded, 2 when the check cannot run (the error on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_tvd is not None and not 0 <= args.max_tvd <= 1:
        parser.error(f"--max-tvd must be between 0 and 1 (a total variation distance), got {args.max_tvd}")
    try:
        report = run(args)
    except (DriftError, RegistryError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    if args.max_tvd is not None and report.tvd > args.max_tvd:
        print(f"drift: total variation distance {report.tvd:.4f} exceeds --max-tvd {args.max_tvd}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(drift_main())
