"""`python -m app`: worker processes, each listening with SO_REUSEPORT; /metrics adds up all of them."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.__main__ import main
from tests.conftest import free_port, png_bytes, wait_until_ready

REPO = Path(__file__).resolve().parents[2]


def test_workers_must_be_positive(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["--workers", "0"])
    assert exit_info.value.code == 2 and "--workers must be at least 1" in capsys.readouterr().err


def post_digit(url: str, payload: bytes) -> int:
    boundary = "b0undary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/digits", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def launch(port: int, workers: int = 2) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return subprocess.Popen([sys.executable, "-m", "app", "--port", str(port), "--workers", str(workers),
                             "--log-level", "warning"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def two_workers() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = launch(port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, proc)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def worker_pids(proc: subprocess.Popen[bytes]) -> list[int]:
    """The launcher's worker processes (its other child is multiprocessing's resource tracker)."""
    children = [int(pid) for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    return [pid for pid in children if b"spawn_main" in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:  # exited since the listing
        return b""


def tcp_sockets(port: int, state: str) -> set[str]:
    """Inodes of the IPv4 TCP sockets with local `port` in `state` (/proc/net/tcp: 0A listen, 01 established)."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return {row[9] for row in rows if int(row[1].split(":")[1], 16) == port and row[3] == state}


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def test_two_workers_serve_and_metrics_add_up(two_workers, mnist_test):
    url, _ = two_workers
    before = metric_total(url)
    payload = png_bytes(mnist_test[0][0])
    assert [post_digit(url, payload) for _ in range(30)] == [200] * 30
    assert metric_total(url) - before == 30  # from both processes, whichever answered /metrics


def metric_total(url: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("modelhouse_predictions_total{") and 'task="digits"' in line)


def test_each_worker_listens_and_a_burst_of_connections_is_spread(two_workers):
    url, proc = two_workers
    port = int(url.rsplit(":", 1)[1])
    pids = worker_pids(proc)
    assert len(pids) == 2
    assert len(tcp_sockets(port, "0A")) == 2  # one listening socket per worker, not one shared
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(32)]
    try:
        for connection in connections:  # a burst, as a load balancer or wrk opens them
            connection.connect()
        for connection in connections:
            connection.request("GET", "/healthz")
            assert connection.getresponse().read() and True
        established = tcp_sockets(port, "01")
        per_worker = [len(socket_inodes(pid) & established) for pid in pids]
        # the kernel hashes connections over the two sockets: Binomial(32, 1/2) <= 3 has odds of ~1e-6
        assert sum(per_worker) == 32 and min(per_worker) >= 4, per_worker
    finally:
        for connection in connections:
            connection.close()


def test_a_dead_worker_is_replaced(two_workers):
    url, proc = two_workers
    victim = worker_pids(proc)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        pids = worker_pids(proc)
        if len(pids) == 2 and victim not in pids:
            break
        time.sleep(0.2)
    assert len(pids) == 2 and victim not in pids
    wait_until_ready(url, proc)


def test_a_port_taken_by_another_server_stops_the_launch():
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        proc = launch(other.getsockname()[1])
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3 and b"Address already in use" in stderr  # uvicorn's STARTUP_FAILURE


def healthz(connection: http.client.HTTPConnection, attempts: int = 3) -> None:
    """One keep-alive GET, retried on a fresh connection when the server closed this one (as urllib3 and
    other HTTP clients retry an idempotent request): a close can race a request already on the wire."""
    errors: list[Exception] = []
    for _ in range(attempts):
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            if response.getheader("connection", "").lower() == "close":
                connection.close()
            return
        except (http.client.HTTPException, ConnectionError) as exc:
            errors.append(exc)
            connection.close()
    raise AssertionError(f"the server did not answer {attempts} times in a row: {errors!r}")


def test_after_a_restart_the_survivor_hands_the_new_worker_its_share_of_connections():
    port = free_port()
    proc = launch(port)
    url = f"http://127.0.0.1:{port}"
    connections: list[http.client.HTTPConnection] = []
    try:
        wait_until_ready(url, proc)
        victim, survivor = worker_pids(proc)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while len(tcp_sockets(port, "0A")) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(32)]
        # While the replacement loads, every connection lands on the survivor; kept busy, none idles long
        # enough for the keep-alive timeout to close it (which would rebalance it by chance).
        while len(tcp_sockets(port, "0A")) != 2 and time.monotonic() < deadline:
            for connection in connections:
                healthz(connection)
        settle = time.monotonic() + 1.5  # the launcher polls for the replacement, then signals the survivor
        while time.monotonic() < settle:
            for connection in connections:
                healthz(connection)
        replacement = next(pid for pid in worker_pids(proc) if pid != survivor)
        established = tcp_sockets(port, "01")
        per_worker = [len(socket_inodes(pid) & established) for pid in (survivor, replacement)]
        assert sum(per_worker) == 32 and min(per_worker) >= 4, per_worker
    except AssertionError as failure:  # say what the launcher saw: a worker that exited, a restart
        proc.terminate()
        _, stderr = proc.communicate(timeout=60)
        raise AssertionError(f"{failure}\nlauncher stderr:\n{stderr.decode(errors='replace')[-4000:]}") from None
    finally:
        for connection in connections:
            connection.close()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)


def test_a_silent_or_byte_a_second_client_is_dropped_after_the_header_timeout():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port), "--workers", "1", "--log-level", "warning"],
                            cwd=REPO, env={**env, "MODELHOUSE_HEADER_TIMEOUT_S": "1", "MODELHOUSE_PRELOAD": "false"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, proc)
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        started = time.monotonic()
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":  # a byte every 0.2 s: never a whole header block
            try:
                slow.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.2)
            if time.monotonic() - started > 4:
                break
        for connection in (silent, slow):
            connection.settimeout(5)
            assert connection.recv(1024) == b"", "the server should have closed it"  # closed: EOF
        assert time.monotonic() - started < 6
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:  # and it goes on serving
            assert response.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=60)
