"""The LeNet-5 accuracy goal: `python -m bench.lenet_seeds [--seeds 0 1 2]`.

Trains the default `training.lenet` recipe once per seed, each in a fresh process timed
wall-clock from launch to exit, and reports MNIST test accuracy per seed and the mean.
Runs use `--no-register` (the registry keeps only what someone chooses to keep).
Writes bench/results/lenet_seeds.md (committed, headed by date, commit, machine and command) and
lenet_seeds.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from bench.report import command_line, markdown_table, publish


def train_once(seed: int, extra: list[str]) -> dict[str, float]:
    """Run `python -m training.lenet --seed SEED --no-register` and parse its JSON summary line."""
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "training.lenet", "--seed", str(seed), "--no-register", "--no-progress",
         "--out-dir", f"runs/lenet/bench-seed{seed}", *extra],
        capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    return {"seed": seed, "test_accuracy": summary["test_accuracy"], "epochs": summary["epochs_run"],
            "process_seconds": round(wall, 1)}


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    parser = argparse.ArgumentParser(prog="python -m bench.lenet_seeds", description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("extra", nargs="*", help="extra training.lenet arguments (after --)")
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seeds:
        rows.append(train_once(seed, args.extra))
        print(f"seed {seed}: {rows[-1]}", file=sys.stderr, flush=True)
    accuracies = [r["test_accuracy"] for r in rows]
    spread = statistics.pstdev(accuracies) * 100 if len(accuracies) > 1 else 0.0
    table = markdown_table(
        ["seed", "MNIST test accuracy", "epochs", "wall time (s)"],
        [*([r["seed"], f"{r['test_accuracy'] * 100:.2f}%", r["epochs"], f"{r['process_seconds']:.0f}"] for r in rows),
         ["mean", f"{statistics.mean(accuracies) * 100:.2f}% (sd {spread:.2f})", "",
          f"{statistics.mean(r['process_seconds'] for r in rows):.0f}"]], align="rrrr")
    extra = f" {' '.join(args.extra)}" if args.extra else ""
    publish("lenet_seeds", f"python -m bench.lenet_seeds: training.lenet{extra}, one process per seed", table, rows,
            command=command_line(parser.prog, argv), started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
