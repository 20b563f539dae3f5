"""`python -m app`: worker processes share the socket, and /metrics adds up all of them."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
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


def test_two_workers_serve_and_metrics_add_up(mnist_test):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port), "--workers", "2", "--log-level",
                             "warning"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, proc)
        payload = png_bytes(mnist_test[0][0])
        assert [post_digit(url, payload) for _ in range(30)] == [200] * 30
        text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
        counted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith("modelhouse_predictions_total{") and 'task="digits"' in line)
        assert counted == 30  # from both processes, whichever answered /metrics
    finally:
        proc.terminate()
        proc.wait(timeout=30)
