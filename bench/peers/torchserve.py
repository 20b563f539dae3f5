"""BASELINE, NOT PART OF THE SERVICE: TorchServe serving the digits model, for `python -m bench.serving`.

`torchserve_process(port, batch_size, max_batch_delay_ms)` packs `bench/peers/torchserve_handler.py` with
`torch-model-archiver --archive-format no-archive`, starts `torchserve --foreground` on 127.0.0.1 with two
workers (one per core, as the service runs) and the model registered with that batch size (1: no batching),
and yields the inference URL prefix once the model answers (`<url>/digits` is the digits endpoint, as on the
service). Needs the `bench` extra (`torchserve`, `torch-model-archiver`, PyYAML) and a Java runtime
(Debian's openjdk-17-jre-headless).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.http import free_port, stop_server, wait_ready
from bench.report import REPO_ROOT

HANDLER = Path(__file__).with_name("torchserve_handler.py")
WORKERS = 2
READY_TIMEOUT_S = 120.0


def available() -> str | None:
    """Why TorchServe cannot run here, or None when it can."""
    if shutil.which("java") is None:
        return "no Java runtime (apt-get install openjdk-17-jre-headless)"
    for tool in ("torchserve", "torch-model-archiver"):
        if shutil.which(tool, path=str(Path(sys.executable).parent)) is None and shutil.which(tool) is None:
            return f"{tool} not installed (pip install -e '.[bench]')"
    return None


def _tool(name: str) -> str:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name) or name


@contextmanager
def torchserve_process(port: int, log_path: Path, batch_size: int = 1,
                       max_batch_delay_ms: int = 5) -> Iterator[str]:
    """TorchServe on 127.0.0.1:`port` with the digits model; yields `http://127.0.0.1:<port>/predictions`."""
    with tempfile.TemporaryDirectory(prefix="bench-torchserve-") as tmp:
        store = Path(tmp) / "model-store"
        store.mkdir()
        subprocess.run([_tool("torch-model-archiver"), "--model-name", "digits", "--version", "1.0", "--handler",
                        str(HANDLER), "--export-path", str(store), "--archive-format", "no-archive"], check=True,
                       cwd=REPO_ROOT, timeout=120)
        model = {"digits": {"1.0": {"defaultVersion": True, "marName": "digits", "minWorkers": WORKERS,
                                    "maxWorkers": WORKERS, "batchSize": batch_size,
                                    "maxBatchDelay": max_batch_delay_ms, "responseTimeout": 60}}}
        config = Path(tmp) / "config.properties"
        config.write_text("\n".join([
            f"inference_address=http://127.0.0.1:{port}", f"management_address=http://127.0.0.1:{free_port()}",
            f"metrics_address=http://127.0.0.1:{free_port()}", f"grpc_inference_port={free_port()}",
            f"grpc_management_port={free_port()}", "disable_token_authorization=true",
            "enable_envvars_config=false", "install_py_dep_per_model=false", f"model_store={store}",
            "load_models=digits", f"models={json.dumps(model)}", f"default_workers_per_model={WORKERS}",
            "disable_system_metrics=true", "async_logging=true"]) + "\n")
        # TMPDIR: torchserve keeps one pid file in the temp directory and refuses a second instance beside it
        env = {**os.environ, "TMPDIR": tmp, "PYTHONPATH": str(REPO_ROOT), "LOG_LOCATION": str(Path(tmp) / "logs"),
               "METRICS_LOCATION": str(Path(tmp) / "logs"), "MODELHOUSE_TORCH_THREADS": "1"}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen([_tool("torchserve"), "--foreground", "--ncs", "--ts-config", str(config),
                                     "--model-store", str(store), "--disable-token-auth"],
                                    cwd=tmp, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                url = f"http://127.0.0.1:{port}"
                # GET /ping says Healthy once the model's workers are up
                wait_ready(url, proc, READY_TIMEOUT_S, log_path, "/ping",
                           lambda body: json.loads(body).get("status") == "Healthy")
                yield f"{url}/predictions"
            finally:
                stop_server(proc)
