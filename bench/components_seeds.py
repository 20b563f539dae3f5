"""`python -m bench.components_seeds`: the default components recipe over 3 seeds (validation errors, time).

Each seed is one `python -m training.components --seed N --no-register` process, timed from start to exit.
Writes bench/results/components_seeds.md (committed, headed by date, commit, machine and command) and
components_seeds.json (git-ignored). The 24 validation photos also drive early stopping and the
unknown threshold, so these errors are optimistic; the held-out test photos are the real check.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from bench.report import REPO_ROOT, RESULTS_DIR, command_line, markdown_table, publish


def main(argv: list[str] | None = None) -> int:
    began = time.time()
    p = argparse.ArgumentParser(prog="python -m bench.components_seeds", description=__doc__)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--recipe", default="finetune", help="a recipe of training.components (default: its default)")
    args, extra = p.parse_known_args(argv)  # anything else goes to training.components (e.g. --unfreeze 6)
    extra = [a for a in extra if a != "--"]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "training.components", "--seed", str(seed), "--recipe", args.recipe, *extra,
                              "--no-register", "--no-progress", "--out-dir", str(RESULTS_DIR / f"components-s{seed}")],
                             cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
        summary = json.loads(out.strip().splitlines()[-1])
        rows.append({"seed": seed, "top1_error": summary["top1_error"], "top3_error": summary["top3_error"],
                     "epochs_run": summary["epochs_run"], "seconds": round(time.perf_counter() - started, 1)})
        print(rows[-1], file=sys.stderr)
    def stats(key: str) -> str:
        values = [r[key] for r in rows]
        return f"{statistics.fmean(values):.3f} ± {statistics.pstdev(values):.3f}"
    text = markdown_table(
        ["seed", "top-1 err", "top-3 err", "epochs", "seconds"],
        [*([r["seed"], f"{r['top1_error']:.1%}", f"{r['top3_error']:.1%}", r["epochs_run"], r["seconds"]] for r in rows),
         ["mean ± sd", stats("top1_error"), stats("top3_error"), "", stats("seconds")]])
    publish("components_seeds", f"python -m bench.components_seeds: recipe {args.recipe}"
            f"{' ' + ' '.join(extra) if extra else ''}, one process per seed", text, rows,
            command=command_line(p.prog, argv), started=began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
