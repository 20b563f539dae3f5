"""`python -m bench.rollouts`: canary split, automatic rollback and shadow cost, on the real server.

On a private copy of the store (two extra digits versions: an identical twin and a candidate), with
`python -m app` and its worker processes:
1. a 20% canary over 1,000 requests (client request ids r-0..r-999): the candidate's share;
2. a canary whose p99 threshold cannot be met (0.001 ms, window 20): requests until it is rolled back
   on its own, and the history's record of it;
3. a shadow of the twin on 100% of requests, off and on in alternating wrk rounds at 8 connections:
   p50/p99 of the served requests, and the shadow's agreement and drops.

Writes bench/results/rollouts.md (and rollouts.json, git-ignored).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import torch

from bench.http import free_port, make_payloads, preflight, require_wrk, run_wrk, server_process, settle, summarize_runs
from bench.report import RESULTS_DIR, command_line, markdown_table, publish
from models.registry import DEFAULT_ROOT, ModelRegistry
from models.runtime import load_model

log = logging.getLogger("bench.rollouts")
TOKEN = "bench-rollouts-token"
TASK, ALIAS = "digits", "production"


def register_twin(registry: ModelRegistry, version: str) -> str:
    """An identical copy of the production digits version, registered as `version`."""
    production = load_model(registry, TASK, ALIAS, torch.device("cpu"))
    keep = {"kind", "architecture", "labels", "preprocessing", "metrics", "evaluation", "training", "lineage", "serving"}
    return registry.register(TASK, production.network, production.manifest.model_dump(include=keep, exclude_none=True),
                             version=version)


def call(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None,
         data: bytes | None = None) -> dict[str, Any]:
    if body is not None:
        data, headers = json.dumps(body).encode(), {**(headers or {}), "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}", **(headers or {})})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def post_digit(url: str, png: bytes, request_id: str | None = None) -> str:
    boundary = "bench"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if request_id:
        headers["X-Request-ID"] = request_id
    return call(f"{url}/digits", "POST", data=body, headers=headers)["model"]["version"]


def canary_split(url: str, png: bytes, candidate: str, requests: int) -> dict[str, Any]:
    rollouts = f"{url}/models/{TASK}/aliases/{ALIAS}"
    call(f"{rollouts}/canary", "POST", {"version": candidate, "percent": 20, "max_p99_ms": 60_000, "window": 10_000})
    served = [post_digit(url, png, f"r-{i}") for i in range(requests)]
    call(f"{rollouts}/canary", "DELETE")
    return {"requests": requests, "candidate": served.count(candidate), "share": served.count(candidate) / requests}


def auto_rollback(url: str, png: bytes, candidate: str, window: int, limit: int = 2000) -> dict[str, Any]:
    rollouts = f"{url}/models/{TASK}/aliases/{ALIAS}"
    call(f"{rollouts}/canary", "POST", {"version": candidate, "percent": 50, "max_p99_ms": 0.001, "window": window})
    canary_requests = sent = 0
    while sent < limit and call(rollouts)["canary"] is not None:
        canary_requests += post_digit(url, png) == candidate
        sent += 1
    events = [e for e in call(f"{url}/models/{TASK}/history")["events"] if e["event"] == "canary_rollback"]
    return {"window": window, "requests_sent": sent, "candidate_requests": canary_requests,
            "rolled_back": bool(events), "reason": events[-1]["reason"] if events else None}


def shadow_cost(url: str, payload: Any, twin: str, rounds: int, duration: int) -> dict[str, Any]:
    rollouts = f"{url}/models/{TASK}/aliases/{ALIAS}"
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    states: dict[int, dict[str, Any]] = {}
    for round_index in range(rounds):
        for mode in ("off", "on") if round_index % 2 == 0 else ("on", "off"):
            if mode == "on":
                call(f"{rollouts}/shadow", "POST", {"version": twin, "percent": 100})
            settle(url, payload)
            result = run_wrk(url, payload, 8, duration, 10)
            runs[mode].append({"req_s": round(result.requests_per_s, 1), "p50": result.latency_ms["p50"],
                               "p99": result.latency_ms["p99"], "errors": result.error_total})
            if mode == "on":
                for _ in range(8):  # new connections land on either worker process: collect both counts
                    state = call(rollouts)
                    states[state["process"]] = state["shadow"]
                call(f"{rollouts}/shadow", "DELETE")
            log.info("round %d shadow %s: %s", round_index + 1, mode, runs[mode][-1])
    shadows = [s for s in states.values() if s]
    compared = sum(s["compared"] for s in shadows)
    agreement = sum((s["agreement"] or 0) * s["compared"] for s in shadows) / compared if compared else None
    return {"off": summarize_runs(runs["off"]), "on": summarize_runs(runs["on"]),
            "agreement": agreement, "compared": compared, "drops": sum(s["drops"] for s in shadows)}


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    p = argparse.ArgumentParser(prog="python -m bench.rollouts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=1000, help="requests of the canary split")
    p.add_argument("--window", type=int, default=20, help="window of the canary that must roll back")
    p.add_argument("--rounds", type=int, default=5, help="alternated rounds of shadow off / on")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    require_wrk()
    from bench.accuracy import load_test_set

    images, labels = load_test_set()
    payload = {pl.name: pl for pl in make_payloads(RESULTS_DIR / "payloads", images[0], int(labels[0]), 0)}["mnist_png"]
    png = payload.path.read_bytes()
    with tempfile.TemporaryDirectory(prefix="bench-rollouts-") as tmp:
        store = Path(tmp) / "store"
        shutil.copytree(DEFAULT_ROOT, store, ignore=shutil.ignore_patterns(".*"))
        registry = ModelRegistry(store)
        twin, candidate = register_twin(registry, "twin"), register_twin(registry, "candidate")
        env = {"MODELHOUSE_STORE_DIR": str(store), "MODELHOUSE_ADMIN_TOKEN": TOKEN}
        with server_process(free_port(), RESULTS_DIR / "server-rollouts.log", env=env) as (url, _):
            preflight(url, payload)
            split = canary_split(url, png, candidate, args.requests)
            rollback = auto_rollback(url, png, candidate, args.window)
            shadow = shadow_cost(url, payload, twin, args.rounds, args.duration)
    report = {"canary_split": split, "auto_rollback": rollback, "shadow": shadow}
    publish("rollouts", "python -m bench.rollouts: canary split, automatic rollback, shadow cost (digits, PNG)",
            sections(report), report, command=command_line(p.prog, argv), started=started)
    return 0


def sections(report: dict[str, Any]) -> list[str]:
    split, rollback, shadow = report["canary_split"], report["auto_rollback"], report["shadow"]
    off, on = shadow["off"], shadow["on"]
    ratio = on["median_p50"] / off["median_p50"] if off["median_p50"] else float("nan")
    return [
        "## Canary split (goal: 16–24% at 20%)\n\n" + markdown_table(
            ["requests", "served by the candidate", "share"],
            [[split["requests"], split["candidate"], f"{100 * split['share']:.1f}%"]]),
        "## Automatic rollback (goal: within `window` candidate requests of a worker process)\n\n"
        "Each of the server's worker processes judges the canary requests it served; the first to fill its "
        "window ends the canary for all (in the store), so the total may exceed one window.\n\n" + markdown_table(
            ["window", "candidate requests before it ended", "requests sent", "in the history", "reason"],
            [[rollback["window"], rollback["candidate_requests"], rollback["requests_sent"],
              "yes" if rollback["rolled_back"] else "NO", rollback["reason"] or "-"]]),
        "## Shadow of an identical copy, 100% of requests, 8 connections (goal: agreement 1.0, p50 within 10%)\n\n"
        + markdown_table(["shadow", "median req/s (min–max)", "median p50 ms (min–max)", "median p99 ms"],
                         [[mode, f"{r['median_req_s']:.0f} ({r['min_req_s']:.0f}–{r['max_req_s']:.0f})",
                           f"{r['median_p50']:.2f} ({r['min_p50']:.2f}–{r['max_p50']:.2f})", f"{r['median_p99']:.1f}"]
                          for mode, r in (("off", off), ("on", on))])
        + f"\n\np50 on / off: **{ratio:.2f}x**; agreement {shadow['agreement']} over {shadow['compared']} compared "
          f"inputs; {shadow['drops']} shadow runs dropped (queue full: the shadow fell behind, the served "
          "requests did not wait).",
    ]


if __name__ == "__main__":
    sys.exit(main())
