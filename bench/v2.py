"""`python -m bench.v2`: the Open Inference Protocol's binary infer against `POST /digits`, same server, same run.

One server (`python -m app`) serves both. Each round drives the 28x28 MNIST PNG through both routes with
the same wrk cell, in alternating order (this machine's throughput drifts between minutes, so only
interleaved runs compare): `POST /digits` with bench/post.lua (multipart), and
`POST /v2/models/digits/infer` with bench/post.lua's "v2" body (the file as a binary BYTES tensor, every output
asked back as binary data). The report gives each route's median req/s and range, p99 latency, the
server's CPU time per request (all its processes, from /proc), and the v2 / REST ratio of the medians.

    python -m bench.v2                      # 32 connections, 10 s runs, 5 rounds
    python -m bench.v2 --connections 64 --rounds 3

Writes bench/results/v2.md (committed, headed by date, commit, machine and command) and v2.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import logging
import struct
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any

from bench.http import (BenchError, Payload, free_port, make_payloads, preflight, process_tree_cpu_s, require_wrk,
                        run_wrk, server_process, settle, summarize_runs)
from bench.report import RESULTS_DIR, command_line, markdown_table, publish

log = logging.getLogger("bench.v2")
V2_ENDPOINT = "/v2/models/digits/infer"
ROUTES = ("rest", "v2")


def v2_body(image: bytes) -> tuple[bytes, int]:
    """The body bench/post.lua posts with BODY "v2", and its JSON header's length."""
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": len(image) + 4}}],
                         "parameters": {"binary_data_output": True}}, separators=(",", ":")).encode()
    return header + struct.pack("<I", len(image)) + image, len(header)


def preflight_v2(url: str, payload: Payload) -> None:
    """POST the v2 request once: raise `BenchError` unless 200 with the expected label."""
    body, header_length = v2_body(payload.path.read_bytes())
    request = urllib.request.Request(f"{url}{V2_ENDPOINT}", data=body, method="POST", headers={
        "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header_length)})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            length = int(response.headers["Inference-Header-Content-Length"])
            answer = response.read()
    except urllib.error.HTTPError as exc:
        raise BenchError(f"POST {V2_ENDPOINT} answered {exc.code}: {exc.read()[:300]!r}") from exc
    label, offset = None, length
    for output in json.loads(answer[:length])["outputs"]:  # binary outputs follow the JSON, in its order
        size = output["parameters"]["binary_data_size"]
        if output["name"] == "label":
            label = answer[offset + 4:offset + size].decode()  # one BYTES element: its 4-byte length, then it
        offset += size
    if label != str(payload.label):
        log.warning("v2: server predicts %s, expected %s", label, payload.label)


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    p = argparse.ArgumentParser(prog="python -m bench.v2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3, help="seconds of discarded load per route before the rounds")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    require_wrk()
    from bench.accuracy import load_test_set

    images, labels = load_test_set()
    rest = {pl.name: pl for pl in make_payloads(RESULTS_DIR / "payloads", images[0], int(labels[0]), 0)}["mnist_png"]
    payloads = {"rest": rest, "v2": replace(rest, endpoint=V2_ENDPOINT)}
    bodies = {"rest": "multipart", "v2": "v2"}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in ROUTES}

    def measure(url: str, name: str, duration: int, proc: Any) -> dict[str, float]:
        cpu_before = process_tree_cpu_s(proc.pid)
        result = run_wrk(url, payloads[name], args.connections, duration, 10, body=bodies[name])
        cpu_ms = 1000 * (process_tree_cpu_s(proc.pid) - cpu_before) / max(result.requests, 1)
        settle(url, rest)
        return {"req_s": round(result.requests_per_s, 1), "p50": result.latency_ms["p50"],
                "p99": result.latency_ms["p99"], "cpu_ms": round(cpu_ms, 3), "errors": result.error_total}

    with server_process(free_port(), RESULTS_DIR / "server-v2.log") as (url, proc):
        preflight(url, rest)
        preflight_v2(url, payloads["v2"])
        for name in ROUTES:
            if args.warmup > 0:
                measure(url, name, args.warmup, proc)
        for round_index in range(args.rounds):
            for name in ROUTES if round_index % 2 == 0 else ROUTES[::-1]:
                runs[name].append(measure(url, name, args.duration, proc))
                log.info("round %d %s: %s", round_index + 1, name, runs[name][-1])
    report: dict[str, Any] = {name: summarize_runs(runs[name]) for name in ROUTES}
    ratio = report["v2"]["median_req_s"] / report["rest"]["median_req_s"]
    report["v2_over_rest"] = round(ratio, 3)
    described = {"rest": "`POST /digits` (multipart, bench/post.lua)",
                 "v2": f"`POST {V2_ENDPOINT}` (binary tensor data, bench/post.lua BODY v2)"}
    rows = [[described[name], f"{r['median_req_s']:.0f} ({r['min_req_s']:.0f}–{r['max_req_s']:.0f})",
             f"{r['median_p99']:.1f} ({r['min_p99']:.1f}–{r['max_p99']:.1f})",
             f"{r['median_cpu_ms']:.3f} ({r['min_cpu_ms']:.3f}–{r['max_cpu_ms']:.3f})",
             sum(run["errors"] for run in r["runs"])] for name, r in ((n, report[n]) for n in ROUTES)]
    table = markdown_table(["route", "median req/s (min–max)", "median p99 ms (min–max)",
                            "server CPU ms per request, median (min–max)", "errors"], rows, align="lllll")
    verdict = (f"v2 / REST median req/s: **{ratio:.3f}** ({'within' if ratio >= 0.9 else 'NOT within'} 10% of "
               "`POST /digits`).")
    publish("v2", f"python -m bench.v2: the 28x28 PNG, {args.connections} connections, {args.duration} s x "
            f"{args.rounds} rounds, routes alternated (wrk -t1 shares the machine's cores)", [table, verdict], report,
            command=command_line(p.prog, argv), started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
