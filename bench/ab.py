"""`python -m bench.ab`: one /digits cell, two server configurations, alternated to cancel machine drift.

This 2-core VM's throughput drifts by 2x between minutes, so a before/after pair of runs proves nothing.
Here each round starts the project's server (`python -m app`) once per configuration, in alternating
order, and drives it with the same wrk cell; the report gives each configuration's median and range,
and the server's CPU time per request (all its processes, from /proc): when both cores are saturated,
that is what a change to the request path changes.

    python -m bench.ab --a MODELHOUSE_BACKENDS='{"digits":"torch"}' --b MODELHOUSE_BACKENDS='{"digits":"onnxruntime"}'
    python -m bench.ab --a MODELHOUSE_GC_FREEZE=false --b MODELHOUSE_GC_FREEZE=true

Two versions of the code: check the other one out beside this one and point A (or B) at it:

    git worktree add /tmp/before HEAD~1 && python -m bench.ab --a-repo /tmp/before

Writes bench/results/ab.md (committed, headed by date, commit, machine and command) and ab.json (git-ignored).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from bench.http import (free_port, make_payloads, preflight, process_tree_cpu_s, require_wrk, run_wrk, server_process,
                        settle, summarize_runs)
from bench.report import RESULTS_DIR, command_line, markdown_table, publish

log = logging.getLogger("bench.ab")
RESULTS = RESULTS_DIR  # payloads and server logs go beside the results


def parse_env(pairs: list[str]) -> dict[str, str]:
    """KEY=VALUE strings as a dict; fails naming the bad one."""
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"bench.ab: expected KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", nargs="*", default=[], metavar="KEY=VALUE", help="environment of configuration A")
    p.add_argument("--b", nargs="*", default=[], metavar="KEY=VALUE", help="environment of configuration B")
    p.add_argument("--a-repo", type=Path, metavar="DIR", help="run A's server from this checkout (default: this one)")
    p.add_argument("--b-repo", type=Path, metavar="DIR", help="run B's server from this checkout (default: this one)")
    p.add_argument("--payload", choices=["mnist_png", "photo_jpeg"], default="mnist_png")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    require_wrk()
    from bench.accuracy import load_test_set

    images, labels = load_test_set()
    payload = {pl.name: pl for pl in make_payloads(RESULTS / "payloads", images[0], int(labels[0]), 0)}[args.payload]
    configs = {"A": parse_env(args.a), "B": parse_env(args.b)}
    repos = {"A": args.a_repo, "B": args.b_repo}
    for name, repo in repos.items():
        if repo is not None and not (repo / "app" / "__main__.py").is_file():
            raise SystemExit(f"bench.ab: --{name.lower()}-repo {repo} is not a modelhouse checkout (no app/__main__.py)")
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for round_index in range(args.rounds):
        for name in ("A", "B") if round_index % 2 == 0 else ("B", "A"):
            with server_process(free_port(), RESULTS / f"server-ab-{name}.log", env=configs[name],
                                repo=repos[name]) as (url, proc):
                preflight(url, payload)
                run_wrk(url, payload, args.connections, 3, 10)  # warm-up, discarded
                settle(url, payload)
                cpu_before = process_tree_cpu_s(proc.pid)
                result = run_wrk(url, payload, args.connections, args.duration, 10)
                cpu_ms = 1000 * (process_tree_cpu_s(proc.pid) - cpu_before) / max(result.requests, 1)
            runs[name].append({"req_s": round(result.requests_per_s, 1), "p50": result.latency_ms["p50"],
                               "p99": result.latency_ms["p99"], "cpu_ms": round(cpu_ms, 3), "errors": result.error_total})
            log.info("round %d %s: %s", round_index + 1, name, runs[name][-1])
    report = {name: {"env": configs[name], "repo": str(repos[name] or "."), **summarize_runs(runs[name])} for name in ("A", "B")}
    rows = []
    for name in ("A", "B"):
        r = report[name]
        env = " ".join(f"{k}={v}" for k, v in r["env"].items()) or "(defaults)"
        rows.append([name, r["repo"], f"`{env}`", f"{r['median_req_s']:.0f} ({r['min_req_s']:.0f}–{r['max_req_s']:.0f})",
                     f"{r['median_p99']:.1f} ({r['min_p99']:.1f}–{r['max_p99']:.1f})",
                     f"{r['median_cpu_ms']:.3f} ({r['min_cpu_ms']:.3f}–{r['max_cpu_ms']:.3f})"])
    text = markdown_table(["config", "checkout", "env", "median req/s (min–max)", "median p99 ms (min–max)",
                           "server CPU ms per request, median (min–max)"], rows, align="llllll")
    publish("ab", f"python -m bench.ab: {args.payload}, {args.connections} connections, {args.duration} s x "
            f"{args.rounds} rounds (wrk -t1 shares the machine's cores)", text, report,
            command=command_line(p.prog, argv), started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
