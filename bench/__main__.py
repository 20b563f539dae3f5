"""`python -m bench`: accuracy of the production digits model and HTTP throughput/latency of POST /digits.

Prints a Markdown report to stdout and writes it to bench/results/bench.md (committed; headed by the
date, commit, machine and command: `bench.report`), the raw numbers to bench/results/bench.json
(git-ignored). Progress goes to stderr.
Exit codes: 0 done, 2 bad arguments, 1 the benchmark could not run (e.g. wrk missing).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.http import BenchError
from bench.report import RESULTS_DIR, command_line, markdown_table, publish

log = logging.getLogger("bench")

DEFAULT_CONNECTIONS = "1,8,32,64"


def connection_list(text: str) -> list[int]:
    """Parse "1,8,32" into [1, 8, 32]; every count must be a positive integer."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("connection counts must be positive integers")
    return counts


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-http", action="store_true", help="skip the wrk benchmark")
    parser.add_argument("--skip-accuracy", action="store_true", help="skip the accuracy measurements")
    parser.add_argument("--duration", type=positive_int, default=10, metavar="SECONDS", help="per wrk run (default 10)")
    parser.add_argument("--connections", type=connection_list, default=connection_list(DEFAULT_CONNECTIONS),
                        metavar="N,N,...", help=f"wrk connection counts (default {DEFAULT_CONNECTIONS})")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--timeout", type=positive_int, default=10, metavar="SECONDS",
                        help="wrk per-request timeout; slower requests count as timeout errors (default 10)")
    parser.add_argument("--warmup", type=int, default=2, metavar="SECONDS",
                        help="discarded load per payload before measuring (default 2, 0 disables)")
    parser.add_argument("--photos", type=positive_int, default=2000, metavar="N",
                        help="test digits rendered per photo variant (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the photo renderings (default 0)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="results directory: bench.md, bench.json, payloads, server log (default bench/results)")
    return parser


def accuracy_markdown(acc: dict[str, Any]) -> list[str]:
    """Markdown lines for the accuracy section of `bench.accuracy.run`'s result."""
    clean = acc["clean"]
    n = acc["photos"][0]["samples"] if acc["photos"] else 0
    lines = [f"## Accuracy: digits/{clean['version']} (production)", "",
             f"MNIST test set: **{clean['accuracy']:.2%}** ({clean['correct']:,}/{clean['samples']:,}), "
             f"tensors normalised as in training.", "",
             f"Photo renderings of the first {n:,} test digits (bench.digit_photos, seed {acc['photo_seed']}), "
             "decoded and preprocessed as the service does:", "",
             markdown_table(["variant", "accuracy (manifest preset)", "accuracy (plain resize)", "mean size",
                             "preprocess ms/img"],
                            [[p["variant"], f"{p['accuracy']:.2%}", f"{p['accuracy_plain']:.2%}",
                              f"{p['mean_bytes'] / 1024:.1f} KiB", f"{p['preprocess_ms']:.2f}"]
                             for p in acc["photos"]])]
    return lines + [""]


def http_markdown(runs: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """Markdown lines for the HTTP section: one table row per wrk run."""
    lines = ["## HTTP: POST /digits (wrk)", "",
             f"wrk -t1, {meta['duration']} s per run, timeout {meta['timeout']} s, after {meta['warmup']} s warm-up "
             f"per payload; the service as `python -m app` (one worker process per core). wrk and the server share the same {meta['cpus']} CPU cores, so "
             "the load generator's own CPU use is included in what the server competes with.", ""]
    lines += [f"- `{p['name']}`: {p['description']}" for p in meta["payloads"]]
    lines += ["", markdown_table(
        ["payload", "connections", "req/s", "p50 ms", "p99 ms", "errors"],
        [[r["payload"], r["connections"], f"{r['requests_per_s']:.1f}", f"{r['latency_ms']['p50']:.2f}",
          f"{r['latency_ms']['p99']:.2f}", _errors(r["errors"])] for r in runs])]
    return lines + [""]


def _errors(errors: dict[str, int]) -> str:
    """"0", or the total followed by its non-zero kinds, e.g. "3 (status 2, timeout 1)"."""
    total = sum(errors.values())
    kinds = ", ".join(f"{k} {v}" for k, v in errors.items() if v)
    return f"{total} ({kinds})" if total else "0"


def run_http(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Build the two payloads from MNIST test digit 0 and run the wrk matrix."""
    from bench import http
    from bench.accuracy import load_test_set

    http.require_wrk()  # fail fast, before loading data
    images, labels = load_test_set()
    payloads = http.make_payloads(args.out / "payloads", images[0], int(labels[0]), args.seed)
    runs = http.run(payloads, args.connections, args.duration, args.port, args.timeout, args.warmup,
                    args.out / "server.log")
    meta = {"duration": args.duration, "timeout": args.timeout, "warmup": args.warmup, "cpus": os.cpu_count(),
            "threads": 1, "payloads": [{"name": p.name, "description": p.description, "label": p.label}
                                       for p in payloads]}
    return runs, meta


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the server's cleanup


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    started = time.time()
    data: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}
    sections: list[str] = []
    try:
        if not args.skip_accuracy:
            from bench import accuracy

            data["accuracy"] = accuracy.run(args.photos, args.seed)
            sections += accuracy_markdown(data["accuracy"])
        if not args.skip_http:
            data["http"], data["http_meta"] = run_http(args)
            sections += http_markdown(data["http"], data["http_meta"])
    except BenchError as exc:
        log.error("%s", exc)
        return 1
    data["seconds"] = round(time.time() - started, 1)
    publish("bench", "python -m bench: digits accuracy and POST /digits throughput", "\n".join(sections), data,
            command=command_line(parser.prog, argv), started=started, directory=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
