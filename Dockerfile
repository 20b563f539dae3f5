# syntax=docker/dockerfile:1
#
# modelhouse: the inference service with its trained models baked in.
#
#   CPU (default):  docker build -t modelhouse:cpu .
#   CUDA:           docker build -t modelhouse:cuda \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 .
#
# The CUDA wheels bring their own CUDA runtime (as pip packages), so the same slim base
# works for both; the host needs the NVIDIA driver and the NVIDIA Container Toolkit.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: a virtualenv holding the package and all its dependencies -----------------
FROM ${PYTHON_IMAGE} AS builder

# Where torch/torchvision come from: the PyTorch CPU index keeps the CUDA libraries
# (several GB) out of the CPU image.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --upgrade pip

WORKDIR /src

# 1. torch/torchvision alone, from TORCH_INDEX_URL, at the versions constraints.txt pins
#    (its own layer: it changes only when the pins or the index change). `torch==X`
#    also matches the index's local builds such as `X+cpu` or `X+cu130`.
COPY constraints.txt ./
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" -c constraints.txt torch torchvision

# 2. The package itself (not editable) and the rest of its dependencies from PyPI. The
#    torch/torchvision installed above already satisfy the same pins, so pip keeps them.
COPY pyproject.toml README.md ./
COPY app ./app
COPY models ./models
COPY training ./training
COPY bench ./bench
RUN pip install --no-cache-dir -c constraints.txt . \
    && pip check

# ---- runtime: the virtualenv, the model store and a non-root user -----------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
ARG APP_GID=10001

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MODELHOUSE_STORE_DIR=/srv/modelhouse/store

RUN groupadd --system --gid "${APP_GID}" modelhouse \
    && useradd --system --uid "${APP_UID}" --gid modelhouse --create-home \
       --home-dir /home/modelhouse --shell /usr/sbin/nologin modelhouse \
    && mkdir -p /srv/modelhouse/store \
    && chown -R modelhouse:modelhouse /srv/modelhouse

COPY --from=builder /opt/venv /opt/venv

# The committed models (models/store/<task>/<version>/ and each task's aliases.json),
# owned by the service user: registering versions and promoting (aliases.json) write here.
# docker-compose.yml mounts a named volume on this path so those changes persist.
COPY --chown=modelhouse:modelhouse models/store/ /srv/modelhouse/store/

# The code runs from the venv's site-packages; this directory holds only the store.
WORKDIR /srv/modelhouse
# Numeric, so that runtimes can check it is not root (e.g. Kubernetes runAsNonRoot).
USER ${APP_UID}:${APP_GID}

EXPOSE 8000

# Ready = every production model loaded: /readyz answers 200 (503 while loading); any
# other status, a refused connection or a timeout makes python exit 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"]

# One worker process per CPU by default (MODELHOUSE_WORKERS overrides); see app/__main__.py.
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8000"]
