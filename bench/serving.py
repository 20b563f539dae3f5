"""Serving performance against the servers a user would pick instead: `python -m bench.serving`.

One run on one machine: the project's service and its peers (bench/peers/, same weights: the tutorial
FastAPI app with 1 and with 2 uvicorn workers, TorchServe with 2 workers without and with batching) run
side by side, with the HTTP floor beside them (a bare ASGI app, 2 uvicorn workers, that reads the body and
answers a constant: no peer, what HTTP alone costs). Each cell is driven on all of them, one after the
other (rotating which goes first), by `wrk -t1` (the load generator shares the 2 cores with the servers)
at 1, 8, 32 and 64 connections, 3 rounds each (`--rounds`; medians reported), for a 28x28 PNG and a
640x480 JPEG photo of a digit (and a 640x480 JPEG for /imagenet/top5 when an imagenet model is
registered: the tutorial peers only). Reports req/s, p50, p99 and errors per cell, the ratio project /
best peer and the project's share of the floor, the in-process ceilings (decode per image, forward at
batch 1/32/256), and an overload run (256 connections) with 503 counts and server RSS before/after.
Results: bench/results/serving.md (committed, headed by date, commit, machine and command) and
serving.json (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

from bench import ceilings
from bench.http import (Payload, free_port, make_payloads, preflight, require_wrk, run_wrk, server_process, settle,
                        summarize_runs)
from bench.peers.torchserve import available as torchserve_available
from bench.peers.torchserve import torchserve_process
from bench.report import RESULTS_DIR, command_line, markdown_table, publish
from models.paths import data_dir

log = logging.getLogger("bench.serving")
RESULTS = RESULTS_DIR  # payloads and server logs go beside the results
BASELINE = "bench.peers.tutorial_app:app"
FLOOR = "bench.peers.http_floor:app"
# peer name -> (kind, option): the tutorial app with N uvicorn workers; TorchServe with batch size N (1: none);
# the HTTP floor with N uvicorn workers (measured beside the peers, never one of them: no model behind it)
PEERS: dict[str, tuple[str, int]] = {"tutorial-1w": ("tutorial", 1), "tutorial-2w": ("tutorial", 2),
                                     "torchserve": ("torchserve", 1), "torchserve-batch8": ("torchserve", 8),
                                     "http-floor": ("floor", 2)}
PEER_TASKS = {"tutorial": {"digits", "imagenet"}, "torchserve": {"digits"}, "floor": {"digits", "imagenet"}}


def imagenet_payload(directory: Path) -> Payload | None:
    """A 640x480 JPEG of a sample photo for /imagenet/top5, if an imagenet model is registered."""
    from models.registry import ModelRegistry

    if "production" not in ModelRegistry().aliases("imagenet"):
        return None
    from PIL import Image

    source = data_dir("imagenet-samples", "teapot.jpg")
    path = directory / "imagenet.jpg"
    Image.open(source).convert("RGB").resize((640, 480)).save(path, quality=90)
    return Payload("imagenet_jpeg", path, "teapot.jpg", "image/jpeg", "teapot", "640x480 JPEG q90",
                   endpoint="/imagenet/top5")


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and all its descendants (the launcher and its worker processes), MB."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) / 1024
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += rss_mb(int(child))
    return total


def start_peer(stack: contextlib.ExitStack, peer: str, task: str) -> str:
    """Start baseline `peer` (a `PEERS` name) serving `task`; its URL prefix (plus a payload's endpoint)."""
    kind, option = PEERS[peer]
    log_path = RESULTS / f"server-{peer}-{task}.log"
    if kind in ("tutorial", "floor"):
        return stack.enter_context(server_process(free_port(), log_path, app=BASELINE if kind == "tutorial" else FLOOR,
                                                  workers=option, env={"MODELHOUSE_BASELINE_TASK": task}))[0]
    return stack.enter_context(torchserve_process(free_port(), log_path, batch_size=option))


def measure(payloads: list[Payload], connections: list[int], duration: int, peers: list[str],
            rounds: int) -> list[dict[str, Any]]:
    """Every payload at every connection count on the project and on each peer serving its task: one row
    per server and cell, its median over `rounds` runs (`summarize_runs`; each run kept in "runs").

    The servers run side by side (an idle one costs nothing) and each cell is measured on all of them, one
    right after the other, `rounds` times, rotating which goes first: this VM's throughput drifts up to 2x
    between minutes, and measuring all project cells first, then all baseline cells, let that drift into
    the ratios; one run per server and cell still moved a ratio by 10-20% between runs of the benchmark.
    """
    rows = []
    with contextlib.ExitStack() as stack:
        urls = {("project", None): stack.enter_context(server_process(free_port(), RESULTS / "server-project.log"))[0]}
        for payload in payloads:
            task = task_of(payload)
            servers = [("project", None)] + [(peer, task) for peer in peers if task in PEER_TASKS[PEERS[peer][0]]]
            for server in servers:
                if server not in urls:
                    urls[server] = start_peer(stack, server[0], task)
                settle(urls[server], payload)
                run_wrk(urls[server], payload, max(connections), 2, 10)  # warm-up, discarded
                settle(urls[server], payload)
            for index, count in enumerate(connections):
                runs: dict[tuple[str, str | None], list[dict[str, Any]]] = {server: [] for server in servers}
                for round_index in range(rounds):
                    shift = (index + round_index) % len(servers)
                    for server in servers[shift:] + servers[:shift]:
                        result = run_wrk(urls[server], payload, count, duration, 10)
                        settle(urls[server], payload)
                        log.info("%s %s c=%d round %d: %.0f req/s p50 %.2f p99 %.2f err %d", server[0], payload.name,
                                 count, round_index + 1, result.requests_per_s, result.latency_ms["p50"],
                                 result.latency_ms["p99"], result.error_total)
                        runs[server].append({"req_s": result.requests_per_s, "p50": result.latency_ms["p50"],
                                             "p99": result.latency_ms["p99"], "errors": result.errors})
                for server, server_runs in runs.items():
                    summary = summarize_runs(server_runs)
                    errors = {key: sum(r["errors"][key] for r in server_runs) for key in server_runs[0]["errors"]}
                    rows.append({"server": server[0], "payload": payload.name, "connections": count,
                                 "req_s": summary["median_req_s"], "p50": summary["median_p50"],
                                 "p99": summary["median_p99"], "errors": errors, "runs": server_runs})
    return rows


def task_of(payload: Payload) -> str:
    """The registry task a payload's endpoint serves (what the baseline app is started for)."""
    return "imagenet" if payload.endpoint == "/imagenet/top5" else "digits"


def overload(payload: Payload, seconds: int, log_path: Path) -> dict[str, Any]:
    """256 connections for `seconds` against the project: shed load, answered requests, RSS drift."""
    with server_process(free_port(), log_path) as (url, proc):
        preflight(url, payload)
        run_wrk(url, payload, 64, 3, 10)
        settle(url, payload)
        before = rss_mb(proc.pid)
        result = run_wrk(url, payload, 256, seconds, 10)
        settle(url, payload)
        after = rss_mb(proc.pid)
        accepted_p99 = server_p99(url)
    return {"payload": payload.name, "seconds": seconds, "requests": result.requests, "req_s": result.requests_per_s,
            "p50_all": result.latency_ms["p50"], "p99_all": result.latency_ms["p99"], "errors": result.errors,
            "accepted_p99_ms_server": accepted_p99, "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1)}


def server_p99(url: str) -> float | None:
    """p99 (upper bucket bound, ms) of successful /digits predictions from the server's own histogram."""
    import urllib.request

    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    buckets = []
    for line in text.splitlines():
        if line.startswith("modelhouse_prediction_duration_seconds_bucket") and 'task="digits"' in line:
            bound = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    return next(bound * 1000 for bound, count in sorted(buckets) if count >= 0.99 * total)


def cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    errors = sum(r["errors"].values())
    return f"{r['req_s']:,.0f} ({r['p50']:.2f} / {r['p99']:.1f} ms)" + (f", {errors} errors" if errors else "")


def markdown(rows: list[dict[str, Any]], ceiling: dict[str, Any], over: dict[str, Any] | None, duration: int,
             rounds: int) -> str:
    index = {(r["server"], r["payload"], r["connections"]): r for r in rows}
    servers = list(dict.fromkeys(r["server"] for r in rows if r["server"] != "project"))
    peers = [s for s in servers if PEERS[s][0] != "floor"]
    floors = [s for s in servers if PEERS[s][0] == "floor"]
    table = []
    for (server, payload, conns), r in index.items():
        if server != "project":
            continue
        measured = [index[(p, payload, conns)] for p in peers if (p, payload, conns) in index]
        best = max(measured, key=lambda b: b["req_s"], default=None)
        ratio = f"**{r['req_s'] / best['req_s']:.2f}x** {best['server']}" if best and best["req_s"] else "-"
        shares = [f"{r['req_s'] / f['req_s']:.0%}" if (f := index.get((name, payload, conns))) and f["req_s"] else "-"
                  for name in floors]
        table.append([payload, conns, cell(r), *(cell(index.get((p, payload, conns))) for p in servers), ratio,
                      *shares])
    lines = ["## Serving: the project and every peer, side by side (each cell on all of them, one after the other, "
             f"{rounds} rounds in rotating order; wrk -t1, {duration} s per run; wrk shares the machine's cores). Each "
             f"entry: the medians over the {rounds} runs of req/s (p50 / p99). The peers are baselines "
             "(bench/peers/), serving the same weights with PyTorch."
             + (" `http-floor` is no peer: a bare ASGI app under the same uvicorn reading the body and answering a "
                "fixed JSON (bench/peers/http_floor.py), what HTTP alone costs; the last column is the project's "
                "share of it." if floors else ""), "",
             markdown_table(["payload", "conns", "project", *servers, "project / best peer",
                             *(f"project / {name}" for name in floors)], table),
             "", "## In-process ceilings (one thread)", "",
             markdown_table(["what", "per second", "ms each"],
                            [[name, f"{per_s:,.0f}", f"{1000 / per_s:.3f}"] for name, per_s in ceiling.items()])]
    if over:
        lines += ["", f"## Overload: 256 connections for {over['seconds']} s, {over['payload']}", "",
                  f"- answered {over['requests']:,} requests ({over['req_s']:.0f}/s); wrk errors {over['errors']} "
                  f"(status = 503 shed; connect/read/write/timeout = lost)",
                  f"- latency of all answers p50 {over['p50_all']:.1f} ms, p99 {over['p99_all']:.1f} ms; "
                  f"accepted predictions p99 <= {over['accepted_p99_ms_server']} ms (server histogram bucket)",
                  f"- server RSS {over['rss_before_mb']} MB before, {over['rss_after_mb']} MB after"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk cell")
    parser.add_argument("--connections", default="1,8,32,64")
    parser.add_argument("--rounds", type=int, default=3, help="runs per server and cell, alternated; each cell "
                        "reports their medians")
    parser.add_argument("--overload", type=int, default=60, metavar="SECONDS", help="256-connection run; 0 skips")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"baselines to compare with, of {', '.join(PEERS)} "
                        "(empty: none); TorchServe ones are left out, with a warning, where it cannot run")
    args = parser.parse_args(argv)
    peers = [p for p in args.peers.split(",") if p]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"--peers: unknown {unknown}; valid: {', '.join(PEERS)}")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    require_wrk()
    connections = [int(c) for c in args.connections.split(",")]
    from bench.accuracy import load_test_set

    images, labels = load_test_set()
    payload_dir = RESULTS / "payloads"
    digits = make_payloads(payload_dir, images[0], int(labels[0]), 0)
    imagenet = imagenet_payload(payload_dir)
    ceiling = ceilings.measure(digits, imagenet)
    missing = torchserve_available()
    if missing and any(PEERS[p][0] == "torchserve" for p in peers):
        log.warning("leaving TorchServe out: %s", missing)
        peers = [p for p in peers if PEERS[p][0] != "torchserve"]
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    rows = measure(digits + ([imagenet] if imagenet else []), connections, args.duration, peers, args.rounds)
    over = overload(digits[0], args.overload, RESULTS / "server-overload.log") if args.overload else None
    publish("serving", "python -m bench.serving: the service vs the peers a user would pick instead",
            markdown(rows, ceiling, over, args.duration, args.rounds),
            {"rows": rows, "ceilings": ceiling, "overload": over,
             "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            command=command_line(parser.prog, argv), started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
