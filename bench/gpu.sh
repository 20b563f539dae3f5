#!/usr/bin/env bash
# The GPU path, measured: `bash bench/gpu.sh` on a machine with a CUDA device (see bench/gpu.py);
# writes bench/results/gpu.md. Without a device it says so and exits 3.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" -m bench.gpu "$@"
