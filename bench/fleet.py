"""`python -m bench.fleet`: two replicas on one object store (a real S3 server, `rclone serve s3`).

On loopback: `rclone serve s3` over a temporary directory holding the committed digits task plus an
identical twin version; replicas A and B (`python -m app`, each with its worker processes and its own
mirror, polling every `--poll` s); a client posting a digit to both replicas alternately the whole time.
1. `--promotions` promotions through A, alternating the two versions: how long until B serves the new one
   (its every answer over `CONFIRM` probes in a row, whichever worker process answers);
2. the store stopped for `--outage` s under that load: failed requests, versions served, /readyz; then it
   comes back and one more promotion must converge;
3. a version with one byte of its weights flipped, written straight into the bucket with the alias
   pointing at it: each replica must refuse it, say so in GET /models/digits, and keep serving.

Writes bench/results/fleet.md (and fleet.json, git-ignored).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.http import free_port, make_payloads, server_process
from bench.report import RESULTS_DIR, command_line, markdown_table, publish
from bench.rollouts import TOKEN, call, post_digit, register_twin
from bench.s3server import S3Server
from models.registry import DEFAULT_ROOT, ModelRegistry
from models.registry.objectstore import ObjectStore
from models.registry.synced import open_registry, upload

log = logging.getLogger("bench.fleet")
URL = "s3://fleet/store"
TASK = "digits"
CONFIRM = 5  # consecutive answers of the new version that count as converged
PROBE_S = 0.02


class Traffic:
    """Posts a digit to each replica in turn until stopped; counts answers and failures."""

    def __init__(self, urls: list[str], png: bytes) -> None:
        self.urls, self.png = urls, png
        self.answers, self.failures = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            url = self.urls[index % len(self.urls)]
            index += 1
            try:
                post_digit(url, self.png)
                self.answers += 1
            except (urllib.error.URLError, OSError, ValueError) as exc:
                self.failures.append(f"{url}: {exc}")
            time.sleep(0.005)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def converge(url: str, png: bytes, version: str, timeout: float) -> float | None:
    """Seconds until every one of `CONFIRM` consecutive answers of `url` is `version` (from the call)."""
    started, streak, first = time.monotonic(), 0, None
    while time.monotonic() - started < timeout:
        if post_digit(url, png) == version:
            first = first if streak else time.monotonic() - started
            streak += 1
            if streak >= CONFIRM:
                return first
        else:
            streak = 0
        time.sleep(PROBE_S)
    return None


def promote(url: str, version: str) -> None:
    call(f"{url}/models/{TASK}/{version}/promote", "POST")


def readiness(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def promotions(a: str, b: str, png: bytes, versions: list[str], count: int, timeout: float) -> list[float | None]:
    times = []
    for index in range(count):
        target = versions[(index + 1) % 2]
        promote(a, target)
        times.append(_round(converge(b, png, target, timeout)))
        log.info("promotion %d -> %s: B converged after %s s", index + 1, target, times[-1])
        time.sleep(0.3 + 0.1 * (index % 5))  # promotions land at varied points of B's poll cycle
    return times


def outage(server: S3Server, a: str, b: str, png: bytes, seconds: float, versions: list[str],
           timeout: float) -> dict[str, Any]:
    before = {name: post_digit(url, png) for name, url in (("A", a), ("B", b))}
    server.stop()
    time.sleep(seconds / 2)
    during = {name: readiness(url) for name, url in (("A", a), ("B", b))}
    time.sleep(seconds / 2)
    after = {name: post_digit(url, png) for name, url in (("A", a), ("B", b))}
    server.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(readiness(u)[1].get("store") != "ok" for u in (a, b)):
        time.sleep(0.2)
    recovered = time.monotonic() - deadline + timeout
    target = next(v for v in versions if v != after["B"])
    promote(a, target)
    return {"before": before, "during": {k: {"status": s, "store": body.get("store"), "ready": body.get("status")}
                                         for k, (s, body) in during.items()},
            "after": after, "recovered_s": round(recovered, 2), "next_promotion_s": _round(converge(b, png, target, timeout))}


def _round(seconds: float | None) -> float | None:
    return round(seconds, 3) if seconds is not None else None


def corrupted(store: ObjectStore, mirror_root: Path, a: str, b: str, png: bytes, timeout: float) -> dict[str, Any]:
    """Upload the served version again as "corrupted" with one weights byte flipped; point production at it."""
    served = post_digit(a, png)
    source = mirror_root / TASK / served
    for path in sorted(source.iterdir()):
        data = path.read_bytes()
        if path.name == "manifest.json":
            record = json.loads(data)
            record["version"] = "corrupted"
            data = json.dumps(record).encode()
        elif path.name == "weights.safetensors":
            data = data[:200] + bytes([data[200] ^ 0x01]) + data[201:]
        store.put(f"{TASK}/corrupted/{path.name}", data)
    aliases = json.loads(store.get(f"{TASK}/aliases.json").data)  # type: ignore[union-attr]
    store.put(f"{TASK}/aliases.json", json.dumps({**aliases, "production": "corrupted"}).encode())
    views: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    for name, url in (("A", a), ("B", b)):
        while time.monotonic() < deadline:
            view = call(f"{url}/models/{TASK}")
            if "corrupted" in (view.get("store") or {}).get("refused", {}):
                break
            time.sleep(0.1)
        views[name] = {"refused": view["store"]["refused"].get("corrupted"), "serves": post_digit(url, png),
                       "converged": view["converged"]}
    store.put(f"{TASK}/aliases.json", json.dumps(aliases).encode())  # put things back
    return {"served_before": served, "replicas": views}


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--poll", type=float, default=1.0, help="MODELHOUSE_ALIAS_POLL_S of both replicas")
    p.add_argument("--promotions", type=int, default=20)
    p.add_argument("--outage", type=float, default=30.0, help="seconds the store is stopped")
    p.add_argument("--timeout", type=float, default=30.0, help="longest wait for any convergence")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    from bench.accuracy import load_test_set

    images, labels = load_test_set()
    png = {pl.name: pl for pl in make_payloads(RESULTS_DIR / "payloads", images[0], int(labels[0]), 0)}[
        "mnist_png"].path.read_bytes()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        root = Path(tmp)
        server = S3Server(root / "s3").start()
        try:
            server.bucket("fleet")
            os.environ.update(server.env)
            upload(ModelRegistry(DEFAULT_ROOT), URL, [TASK])
            trainer = open_registry(URL, root / "trainer", sync=True)
            versions = [trainer.aliases(TASK)["production"], register_twin(trainer, "twin")]
            env = {"MODELHOUSE_STORE": URL, "MODELHOUSE_ALIAS_POLL_S": str(args.poll), "MODELHOUSE_ADMIN_TOKEN": TOKEN,
                   **server.env}
            with server_process(free_port(), RESULTS_DIR / "server-fleet-a.log",
                                env={**env, "MODELHOUSE_CACHE_DIR": str(root / "a")}) as (a, _), \
                    server_process(free_port(), RESULTS_DIR / "server-fleet-b.log",
                                   env={**env, "MODELHOUSE_CACHE_DIR": str(root / "b")}) as (b, _):
                with Traffic([a, b], png) as traffic:
                    times = promotions(a, b, png, versions, args.promotions, args.timeout)
                    down = outage(server, a, b, png, args.outage, versions, args.timeout)
                    bad = corrupted(ObjectStore(URL), root / "trainer", a, b, png, args.timeout)
        finally:
            server.stop()
    report = {"poll_s": args.poll, "promotions": times, "outage_s": args.outage, "outage": down, "corrupted": bad,
              "traffic": {"answers": traffic.answers, "failures": len(traffic.failures),
                          "first_failures": traffic.failures[:10]}}
    publish("fleet", "python -m bench.fleet: two replicas on one S3 store (rclone serve s3, loopback)",
            sections(report), report, command=command_line(p.prog, argv), started=started)
    return 0 if goals_met(report) else 1


def goals_met(report: dict[str, Any]) -> bool:
    times = report["promotions"]
    done = [t for t in times if t is not None]
    replicas = report["corrupted"]["replicas"].values()
    return (len(done) == len(times) and max(done) <= 5.0 and report["traffic"]["failures"] == 0
            and report["outage"]["before"] == report["outage"]["after"] and report["outage"]["next_promotion_s"] is not None
            and all(r["refused"] and r["serves"] == report["corrupted"]["served_before"] for r in replicas))


def sections(report: dict[str, Any]) -> list[str]:
    times = [t for t in report["promotions"] if t is not None]
    missed = len(report["promotions"]) - len(times)
    down, bad, traffic = report["outage"], report["corrupted"], report["traffic"]
    median = statistics.median(times) if times else float("nan")
    return [
        f"## Promotions through A, convergence of B (poll {report['poll_s']} s; goal: every one within 5 s, "
        "median ≤ 1.5 s)\n\n" + markdown_table(
            ["promotions", "converged", "median s", "max s", "all (s)"],
            [[len(report["promotions"]), len(times), f"{median:.2f}", f"{max(times):.2f}" if times else "-",
              " ".join(f"{t:.2f}" for t in times) + (f" (+{missed} never)" if missed else "")]]),
        f"## Store stopped for {report['outage_s']:.0f} s under load (goal: no failed request, versions "
        "unchanged, the next promotion converges)\n\n" + markdown_table(
            ["replica", "served before", "/readyz during", "served after"],
            [[name, down["before"][name], f"{down['during'][name]['status']} {down['during'][name]['ready']}, "
              f"store {down['during'][name]['store']}", down["after"][name]] for name in ("A", "B")])
        + f"\n\nBoth back to store ok {down['recovered_s']} s after it returned; the next promotion converged on B "
          f"after {down['next_promotion_s']} s.",
        "## A corrupted version (one weights byte flipped) made production in the store (goal: refused by "
        "every replica, which keeps serving)\n\n" + markdown_table(
            ["replica", "serves", "refusal shown in GET /models/digits"],
            [[name, r["serves"], r["refused"] or "NOT SHOWN"] for name, r in bad["replicas"].items()]),
        f"## Traffic to both replicas throughout\n\n{traffic['answers']} answers, **{traffic['failures']} failed**"
        + ("" if not traffic["first_failures"] else ": " + "; ".join(traffic["first_failures"])),
    ]


if __name__ == "__main__":
    sys.exit(main())
