"""`bash bench/gpu.sh` on a machine without a CUDA device: it says so, measures nothing, exits 3."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device: the script would measure it")
def test_without_a_device_the_gpu_script_stops_with_a_clear_message():
    results = REPO / "bench" / "results" / "gpu.md"
    before = results.read_bytes() if results.exists() else None
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "no CUDA device here" in done.stderr and "nothing was measured" in done.stderr
    assert (results.read_bytes() if results.exists() else None) == before  # no results written
