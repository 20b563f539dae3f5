"""`python -m bench.cifar10`: every CIFAR-10 recipe's test accuracy, training wall time and size.

With `--train RECIPE ...`, trains each recipe first (`python -m training.cifar10 --recipe R`, one at a time,
registering into `--store`, the production alias left alone; with `--epochs N ...`, once per N); then reports every registered `cifar10`
version of `--store` and of the committed store from its manifest: recipe, network, parameters, weights size, epochs, precision,
training wall time (decode + train + scoring, as the trainer measured it), CPU, test accuracy (10,000
test images, with the version's test-time augmentation) and, for the student report's networks, the
reported figure. For the versions of the default recipe it also lists validation accuracy after each
epoch against the training time so far (one one-cycle run: what a shorter run of the same schedule would
reach is not the same thing, but it shows where the time goes), and, when it has several, their test
accuracy against their training time.

Writes bench/results/cifar10.md (and cifar10.json, git-ignored).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.report import REPO_ROOT, command_line, markdown_table, publish
from models.registry import DEFAULT_ROOT, Manifest, ModelRegistry, UnknownTaskError
from training.cifar10 import DEFAULTS, RECIPES, TASK

log = logging.getLogger("bench.cifar10")
REPORTED = {"lenet": 70.78, "keras-cnn": 82.37, "alexnet": 60.76}  # the student report's test accuracy (%)
GOAL = {"accuracy": 93.0, "minutes": 60.0}  # the default recipe's
HISTORY = "history.json"  # the per-epoch rows every scratch version keeps as an artifact


def train(recipes: list[str], store: Path, epochs: list[int]) -> None:
    """One `training.cifar10` run per recipe and per entry of `epochs` (empty: the recipe's own count), in turn."""
    for recipe in recipes:
        for count in epochs or [None]:
            command = [sys.executable, "-m", "training.cifar10", "--recipe", recipe, "--no-progress", "--store",
                       str(store), *(["--epochs", str(count)] if count else [])]
            log.info("training: %s", " ".join(command[1:]))
            subprocess.run(command, cwd=REPO_ROOT, check=True)


def row(manifest: Manifest, directory: Path) -> dict[str, Any]:
    training, metrics = manifest.training, manifest.metrics
    config = training.get("config", {})
    weights_bytes = (directory / manifest.weights.file).stat().st_size
    history = json.loads((directory / HISTORY).read_text()) if HISTORY in manifest.artifacts else []
    return {"version": manifest.version, "recipe": training.get("recipe", config.get("recipe")), "arch": manifest.architecture.name,
            "parameters": manifest.parameters, "weights_mb": round(weights_bytes / 1e6, 2),
            "epochs": training.get("epochs_run"), "precision": config.get("precision", "fp32"),
            "tta": manifest.preprocessing.get("tta"), "wall_s": training.get("wall_seconds"),
            "device": training.get("device"), "cpu": training.get("cpu"), "threads": training.get("threads"),
            "test_accuracy": round(100 * metrics["test_accuracy"], 2) if "test_accuracy" in metrics else None,
            "history": [(r["epoch"], r["seconds"], r["dev_accuracy"]) for r in history]}


def collect(registries: list[ModelRegistry]) -> list[dict[str, Any]]:
    """A row per cifar10 version of each registry (a version in two of them once)."""
    rows: dict[str, dict[str, Any]] = {}
    for registry in registries:
        try:
            versions = registry.versions(TASK)  # a store --train registered into has no alias file
        except UnknownTaskError:
            continue
        for version in versions:
            rows.setdefault(version, row(registry.manifest(TASK, version), registry.root / TASK / version))
    return sorted(rows.values(), key=lambda r: r["version"])


def sections(rows: list[dict[str, Any]], production: str | None) -> list[str]:
    def verdict(r: dict[str, Any]) -> str:
        if r["recipe"] in REPORTED and r["test_accuracy"] is not None:
            reported = REPORTED[r["recipe"]]
            return f"{reported}% ({'beaten' if r['test_accuracy'] > reported else 'NOT beaten'})"
        if r["recipe"] == DEFAULTS.recipe and r["test_accuracy"] is not None and r["wall_s"]:
            met = r["test_accuracy"] >= GOAL["accuracy"] and r["wall_s"] <= 60 * GOAL["minutes"]
            return f"goal ≥{GOAL['accuracy']}% in ≤{GOAL['minutes']:.0f} min: {'met' if met else 'NOT met'}"
        return "-"

    table = markdown_table(
        ["version", "recipe", "network", "parameters", "weights MB", "epochs", "precision", "TTA", "wall min",
         "test accuracy %", "reported / goal", "device, CPU"],
        [[r["version"] + (" (production)" if r["version"] == production else ""), r["recipe"], r["arch"],
          f"{r['parameters']:,}", r["weights_mb"], r["epochs"], r["precision"], r["tta"] or "-",
          f"{r['wall_s'] / 60:.1f}" if r["wall_s"] else "-", r["test_accuracy"], verdict(r),
          f"{r['device']}, {r['cpu'] or 'CPU not recorded'}, {r['threads']} threads"] for r in rows], align="lllrrrllrrll")
    default = sorted((r for r in rows if r["recipe"] == DEFAULTS.recipe and r["wall_s"] and r["test_accuracy"]),
                     key=lambda r: r["wall_s"])
    curve = (["## The default recipe: test accuracy against training time (separate runs, each its own one-cycle "
              "schedule)\n\n" + markdown_table(
                  ["epochs", "wall min", "test accuracy %", "version"],
                  [[r["epochs"], f"{r['wall_s'] / 60:.1f}", r["test_accuracy"], r["version"]] for r in default])]
             if len(default) > 1 else [])
    out = ["## Every registered cifar10 version (test set: 10,000 images, JPEG re-encodings of the originals: "
           "figures can differ slightly from ones on the official batches)\n\n" + table, *curve]
    for r in rows:
        if r["recipe"] == DEFAULTS.recipe and r["history"]:
            elapsed, lines = 0.0, []
            for epoch, seconds, accuracy in r["history"]:
                elapsed += seconds
                lines.append([epoch, f"{elapsed / 60:.1f}", f"{100 * accuracy:.2f}"])
            out.append(f"## {r['version']}: validation accuracy (5,000 held-out training images, no TTA) against "
                       "training time\n\n" + markdown_table(["epoch", "training min so far", "validation accuracy %"],
                                                            lines))
    return out


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    p = argparse.ArgumentParser(prog="python -m bench.cifar10", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", nargs="*", default=[], choices=sorted(RECIPES), metavar="RECIPE",
                   help=f"train these recipes first (of {', '.join(sorted(RECIPES))})")
    p.add_argument("--epochs", nargs="*", type=int, default=[], metavar="N",
                   help="with --train: one run per N epochs (separate schedules: accuracy against training time)")
    p.add_argument("--note", default="", help="a line for the results file (e.g. what else ran meanwhile)")
    p.add_argument("--store", type=Path, default=DEFAULT_ROOT, help="where --train registers; the report covers "
                   "its versions and the committed store's (default: %(default)s)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    train(args.train, args.store, args.epochs)
    committed = ModelRegistry(DEFAULT_ROOT)
    rows = collect([ModelRegistry(args.store), committed])
    production = committed.aliases(TASK).get("production") if TASK in committed.tasks() else None
    notes = [f"Note: {args.note}"] if args.note else []
    publish("cifar10", "python -m bench.cifar10: CIFAR-10 recipes, accuracy, wall time, size",
            notes + sections(rows, production),
            {"rows": rows, "production": production}, command=command_line(p.prog, argv), started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
