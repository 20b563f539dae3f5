"""`python -m bench.components_seeds`: the default components recipe over 3 seeds (validation errors, time).

Each seed is one `python -m training.components --seed N --no-register` process, timed from start to exit.
Writes bench/results/components_seeds.{md,json}. The 24 validation photos also drive early stopping and the
unknown threshold, so these errors are optimistic; the held-out test photos are the real check.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.components_seeds", description=__doc__)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--recipe", default="finetune", help="a recipe of training.components (default: its default)")
    args, extra = p.parse_known_args(argv)  # anything else goes to training.components (e.g. --unfreeze 6)
    extra = [a for a in extra if a != "--"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "training.components", "--seed", str(seed), "--recipe", args.recipe, *extra,
                              "--no-register", "--no-progress", "--out-dir", str(RESULTS / f"components-s{seed}")],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout
        summary = json.loads(out.strip().splitlines()[-1])
        rows.append({"seed": seed, "top1_error": summary["top1_error"], "top3_error": summary["top3_error"],
                     "epochs_run": summary["epochs_run"], "seconds": round(time.perf_counter() - started, 1)})
        print(rows[-1], file=sys.stderr)
    def stats(key: str) -> str:
        values = [r[key] for r in rows]
        return f"{statistics.fmean(values):.3f} ± {statistics.pstdev(values):.3f}"
    md = [f"# bench.components_seeds (recipe {args.recipe}{' ' + ' '.join(extra) if extra else ''})", "", "| seed | top-1 err | top-3 err | epochs | seconds |",
          "|---|---|---|---|---|"]
    md += [f"| {r['seed']} | {r['top1_error']:.1%} | {r['top3_error']:.1%} | {r['epochs_run']} | {r['seconds']} |"
           for r in rows]
    md += [f"| mean ± sd | {stats('top1_error')} | {stats('top3_error')} | | {stats('seconds')} |"]
    text = "\n".join(md) + "\n"
    (RESULTS / "components_seeds.md").write_text(text)
    (RESULTS / "components_seeds.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
