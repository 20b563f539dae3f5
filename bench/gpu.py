"""`bash bench/gpu.sh` (`python -m bench.gpu`): the GPU path, measured on a machine with a CUDA device.

1. `training.lenet` on CUDA (the default recipe, into a throwaway store): wall time, and whether it reached
   the accuracy goal;
2. the service with `MODELHOUSE_DEVICE=cuda`: `POST /imagenet/top5` of a 640x480 photo at 8 and 32
   connections (wrk);
3. whether the committed production versions predict the same on CPU and GPU: top-1 agreement and the
   largest probability difference, on MNIST test digits and the ImageNet sample photos.

Writes bench/results/gpu.md. Without a CUDA device it measures nothing and exits 3 with a message saying so.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.http import Payload, free_port, preflight, require_wrk, run_wrk, server_process, settle
from bench.report import RESULTS_DIR, command_line, markdown_table, publish
from models.paths import REPO_ROOT, data_dir
from models.registry import DEFAULT_ROOT, ModelRegistry
from models.runtime import load_model

log = logging.getLogger("bench.gpu")
NO_DEVICE = 3
LENET_GOAL = 0.99  # test accuracy of the digits task's acceptance


class NoDevice(SystemExit):
    def __init__(self, why: str) -> None:
        print(f"bench/gpu.sh: no CUDA device here ({why}); nothing was measured. Run it on a machine with an "
              "NVIDIA GPU, its driver and a CUDA build of torch.", file=sys.stderr)
        super().__init__(NO_DEVICE)


def require_cuda() -> str:
    """The CUDA device's name, or `NoDevice` (exit 3) saying why there is none."""
    if torch.version.cuda is None:
        raise NoDevice(f"torch {torch.__version__} is a CPU-only build")
    if not torch.cuda.is_available():
        raise NoDevice(f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no device")
    return torch.cuda.get_device_name(0)


def lenet_on_cuda(store: Path) -> dict[str, Any]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "training.lenet", "--device", "cuda", "--store", str(store),
                    "--no-progress"], cwd=REPO_ROOT, check=True)
    wall = time.perf_counter() - started
    registry = ModelRegistry(store)
    manifest = registry.manifest("digits", registry.versions("digits")[-1])
    accuracy = float(manifest.metrics["test_accuracy"])
    return {"wall_s": round(wall, 1), "test_accuracy": accuracy, "goal": LENET_GOAL, "reached": accuracy >= LENET_GOAL}


def served_on_cuda(photo: Path, duration: int) -> list[dict[str, Any]]:
    payload = Payload("photo_jpeg", photo, photo.name, "image/jpeg", "-", "ImageNet sample photo", "/imagenet/top5")
    cells = []
    with server_process(free_port(), RESULTS_DIR / "server-gpu.log", env={"MODELHOUSE_DEVICE": "cuda"}) as (url, _):
        preflight(url, payload)
        run_wrk(url, payload, 8, 3, 10)  # warm-up (CUDA kernels, allocator), discarded
        for connections in (8, 32):
            settle(url, payload)
            result = run_wrk(url, payload, connections, duration, 10)
            cells.append({"connections": connections, "req_s": round(result.requests_per_s, 1),
                          "p50": result.latency_ms["p50"], "p99": result.latency_ms["p99"], "errors": result.error_total})
    return cells


def same_on_both(registry: ModelRegistry) -> list[dict[str, Any]]:
    """Top-1 agreement and the largest probability difference between CPU and CUDA, per task."""
    from bench.accuracy import load_test_set
    from bench.digit_photos import mnist_png
    from models.preprocessing import image_to_array, to_tensor

    images, _ = load_test_set()
    inputs = {"digits": [mnist_png(image) for image in images[:500]],
              "imagenet": [p.read_bytes() for p in sorted(data_dir("imagenet-samples").glob("*.jpg"))]}
    rows = []
    for task, files in inputs.items():
        cpu = load_model(registry, task, "production", torch.device("cpu"))
        gpu = load_model(registry, task, "production", torch.device("cuda"))
        batch = to_tensor([image_to_array(f, cpu.preprocessing, max_pixels=10**8) for f in files], cpu.preprocessing)
        p_cpu, p_gpu = cpu.predict_proba(batch), gpu.predict_proba(batch).cpu()
        rows.append({"task": task, "inputs": len(files),
                     "top1_agreement": float((p_cpu.argmax(1) == p_gpu.argmax(1)).float().mean()),
                     "max_probability_difference": float((p_cpu - p_gpu).abs().max())})
    return rows


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    p = argparse.ArgumentParser(prog="bash bench/gpu.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    device = require_cuda()
    require_wrk()
    photo = sorted(data_dir("imagenet-samples").glob("*.jpg"))[0]
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        store = Path(tmp) / "store"
        shutil.copytree(DEFAULT_ROOT, store, ignore=shutil.ignore_patterns(".*", "_replicas"))
        training = lenet_on_cuda(store)
    report = {"device": device, "lenet": training, "served": served_on_cuda(photo, args.duration),
              "same": same_on_both(ModelRegistry(DEFAULT_ROOT))}
    publish("gpu", f"bash bench/gpu.sh: the GPU path on {device}", sections(report), report,
            command=command_line(p.prog, argv), started=started)
    print(json.dumps(report, indent=2))
    return 0


def sections(report: dict[str, Any]) -> list[str]:
    lenet = report["lenet"]
    return [
        "## training.lenet on CUDA\n\n" + markdown_table(
            ["wall time (s)", "test accuracy", f"goal {lenet['goal']}"],
            [[lenet["wall_s"], f"{lenet['test_accuracy']:.4f}", "reached" if lenet["reached"] else "NOT reached"]]),
        "## POST /imagenet/top5 (640x480 photo), MODELHOUSE_DEVICE=cuda\n\n" + markdown_table(
            ["connections", "req/s", "p50 ms", "p99 ms", "errors"],
            [[c["connections"], c["req_s"], c["p50"], c["p99"], c["errors"]] for c in report["served"]]),
        "## CPU and GPU predictions of the production versions\n\n" + markdown_table(
            ["task", "inputs", "top-1 agreement", "largest probability difference"],
            [[r["task"], r["inputs"], f"{r['top1_agreement']:.4f}", f"{r['max_probability_difference']:.2e}"]
             for r in report["same"]]),
    ]


if __name__ == "__main__":
    sys.exit(main())
