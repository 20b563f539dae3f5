"""HTTP throughput and latency of `POST /digits`, measured with wrk against a real uvicorn subprocess.

The server runs in its own process group and is always killed on exit (error, Ctrl-C, SIGTERM).
wrk runs with one thread; it shares the machine's cores with the server.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.digit_photos import mnist_png, noisy_photo

log = logging.getLogger("bench.http")

REPO_ROOT = Path(__file__).resolve().parents[1]
LUA_SCRIPT = REPO_ROOT / "bench" / "post.lua"
WRK_INSTALL = "apt-get update && apt-get install -y wrk"
WRK_MARKER = "WRK_JSON "
SERVER_ENV = {"MODELHOUSE_PRELOAD": "true", "MODELHOUSE_DEVICE": "cpu", "MODELHOUSE_LOG_LEVEL": "WARNING"}


class BenchError(RuntimeError):
    """The benchmark cannot run or produced no usable measurement."""


@dataclass(frozen=True)
class Payload:
    """One image file posted as the multipart part `file`, and the digit it shows."""

    name: str
    path: Path
    filename: str
    content_type: str
    label: int | str
    description: str
    endpoint: str = "/digits"


def summarize_runs(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Median, min and max of req/s, p50, p99 and server CPU per request (those the runs have) over
    alternated rounds."""
    summary: dict[str, Any] = {"runs": runs}
    for key in ("req_s", "p50", "p99", "cpu_ms"):
        if key not in runs[0]:
            continue
        values = [r[key] for r in runs]
        summary.update({f"median_{key}": statistics.median(values), f"min_{key}": min(values), f"max_{key}": max(values)})
    return summary


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by `pid` and its descendants (`python -m app`'s workers)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):  # it exited meanwhile
        return 0.0
    return total + sum(process_tree_cpu_s(child) for child in children)


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: totals, rate, latency percentiles (ms) and wrk's error counters."""

    payload: str
    connections: int
    requests: int
    duration_s: float
    requests_per_s: float
    latency_ms: dict[str, float]
    errors: dict[str, int]

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())


def require_wrk() -> str:
    """Path of the wrk binary; raises `BenchError` naming the install command when it is missing."""
    path = shutil.which("wrk")
    if path is None:
        raise BenchError(f"wrk is not installed (needed for the HTTP benchmark); install it with: {WRK_INSTALL}"
                         " (or run with --skip-http)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_payloads(directory: Path, image: np.ndarray, label: int, seed: int) -> list[Payload]:
    """Write (a) the 28x28 MNIST PNG of `image` and (b) a seeded 640x480 noisy JPEG photo of it."""
    directory.mkdir(parents=True, exist_ok=True)
    png, jpeg = directory / "digit.png", directory / "photo.jpg"
    png.write_bytes(mnist_png(image))
    jpeg.write_bytes(noisy_photo(image, np.random.default_rng(seed)))
    return [
        Payload("mnist_png", png, "digit.png", "image/png", label, f"28x28 PNG, {png.stat().st_size} B"),
        Payload("photo_jpeg", jpeg, "photo.jpg", "image/jpeg", label, f"640x480 JPEG q60, {jpeg.stat().st_size} B"),
    ]


@contextmanager
def running_server(port: int, log_path: Path, ready_timeout: float = 60.0, app: str | None = None,
                   env: dict[str, str] | None = None) -> Iterator[str]:
    """`server_process` yielding only the base URL."""
    with server_process(port, log_path, ready_timeout, app, env) as (url, _):
        yield url


@contextmanager
def server_process(port: int, log_path: Path, ready_timeout: float = 60.0, app: str | None = None,
                   env: dict[str, str] | None = None, repo: Path | None = None,
                   workers: int = 1) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start a server on 127.0.0.1:`port`: the project's own launcher (`python -m app`: its worker processes,
    shared metrics) when `app` is None, else uvicorn with the ASGI app `app` (a baseline) and `workers` processes; yield its base
    URL once /readyz is 200, always kill it after.

    Raises `BenchError` if the server exits early or is not ready within `ready_timeout` seconds
    (the tail of its log, written to `log_path`, is included).
    """
    if app is None:
        cmd = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    else:
        cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
               "--no-access-log", "--log-level", "warning", "--workers", str(workers)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=repo or REPO_ROOT, env={**os.environ, **SERVER_ENV, **(env or {})}, stdout=log_file,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc, ready_timeout, log_path)
            log.info("server pid %d ready at %s", proc.pid, url)
            yield url, proc
        finally:
            stop_server(proc)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float, log_path: Path, path: str = "/readyz",
               ready: Callable[[bytes], bool] = lambda _: True) -> None:
    """Poll GET `path` until it answers 200 with a body `ready` accepts; raise `BenchError` on exit or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with code {proc.returncode}:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2) as response:
                if response.status == 200 and ready(response.read()):
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            pass  # not listening yet, 503 while the model loads, or not the answer `ready` waits for
        time.sleep(0.2)
    raise BenchError(f"server not ready after {timeout:.0f}s:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def stop_server(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL it after `grace` seconds; never raises."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            log.warning("server pid %d ignored %s", proc.pid, sig.name)
    log.info("server pid %d stopped (exit code %s)", proc.pid, proc.returncode)


def preflight(url: str, payload: Payload) -> None:
    """POST `payload` once: raise `BenchError` unless 200; warn if the predicted label is wrong."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{payload.filename}"\r\n'
            f"Content-Type: {payload.content_type}\r\n\r\n").encode() + payload.path.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}{payload.endpoint}", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        raise BenchError(f"POST {payload.endpoint} with {payload.name} answered {exc.code}: {exc.read()[:300]!r}") from exc
    label = answer["predictions"][0]["label"]
    if str(label) != str(payload.label):
        log.warning("%s: server predicts %s, expected %s", payload.name, label, payload.label)


def settle(url: str, payload: Payload, pause: float = 0.5) -> None:
    """Let the server drain requests left queued when wrk closed its connections, so runs do not overlap.

    One POST queues behind that backlog in the inference pool; the pause lets the event loop go idle.
    """
    deadline = time.monotonic() + 60
    while True:  # after an overload run the queues may still be full: wait until requests are accepted again
        try:
            preflight(url, payload)
            break
        except (BenchError, ConnectionError) as exc:  # TorchServe resets connections for a while after a flood
            if not (isinstance(exc, ConnectionError) or "answered 503" in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(1)
    time.sleep(pause)


def run_wrk(url: str, payload: Payload, connections: int, duration: int, timeout: int,
            body: str = "multipart") -> WrkResult:
    """One `wrk -t1 -cN -dS` run posting `payload` to its endpoint as bench/post.lua's `body` ("multipart",
    or "v2": an Open Inference Protocol binary infer); raises `BenchError` without a summary line."""
    cmd = [require_wrk(), "-t1", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout}s", "-s", str(LUA_SCRIPT),
           f"{url}{payload.endpoint}", "--", str(payload.path), payload.filename, payload.content_type, body]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(WRK_MARKER)), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    data = json.loads(line[len(WRK_MARKER):])
    return WrkResult(payload.name, connections, data["requests"], data["duration_s"],
                     data["requests"] / data["duration_s"], data["latency_ms"], data["errors"])


def run(payloads: list[Payload], connections: list[int], duration: int, port: int, timeout: int,
        warmup: int, log_path: Path) -> list[dict[str, Any]]:
    """Start the server; per payload: preflight, `warmup` s of discarded load, one run per connection count.

    The server is settled (see `settle`) after every wrk run.

    Returns one JSON-ready dict per run (WrkResult fields plus error_total). `port` 0 picks a free port.
    """
    require_wrk()
    results = []
    with running_server(port or free_port(), log_path) as url:
        for payload in payloads:
            preflight(url, payload)
            if warmup > 0:
                run_wrk(url, payload, max(connections), warmup, timeout)
                settle(url, payload)
            for count in connections:
                result = run_wrk(url, payload, count, duration, timeout)
                settle(url, payload)
                log.info("%s c=%d: %.1f req/s, p50 %.2f ms, p99 %.2f ms, errors %d", payload.name, count,
                         result.requests_per_s, result.latency_ms["p50"], result.latency_ms["p99"],
                         result.error_total)
                results.append({**asdict(result), "error_total": result.error_total})
    return results
