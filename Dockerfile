# syntax=docker/dockerfile:1
# svd-wct web app (app.py) in a container.
#
# CPU image (default):
#   docker build -t svd-wct .
#   docker run --rm -p 7860:7860 svd-wct                     # then open http://127.0.0.1:7860
# CUDA image (needs the NVIDIA Container Toolkit on the host to run):
#   docker build -t svd-wct:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
#   docker run --rm --gpus all -p 7860:7860 svd-wct:cuda
#
# The image installs the project exactly like the README (`pip install -e .`), after installing torch and
# torchvision from TORCH_INDEX_URL (the CPU-only wheels by default, ~5x smaller than the CUDA ones).
# Nothing is downloaded when the container runs: checkpoints are the ones in checkpoints/ at build time
# (or mount your own: -v "$PWD/my_ckpts:/app/checkpoints:ro").

ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HF_HUB_OFFLINE=1 \
    DO_NOT_TRACK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# CUDA base images (Ubuntu) have no Python: install it. python:*-slim already has it (then this is a no-op).
# Versions: apt packages follow the base image; pip/setuptools/wheel are only the installer tooling.
# hadolint ignore=DL3008,DL3013
RUN if ! command -v python3 >/dev/null 2>&1 || ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv python3-pip \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv "$VIRTUAL_ENV" \
    && pip install --upgrade pip setuptools wheel

# Non-root user that runs the app.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app

WORKDIR /app

# torch/torchvision first, in their own layer (large, rarely changes), with the version ranges of
# pyproject.toml, from TORCH_INDEX_URL (CPU-only or CUDA wheels).
COPY pyproject.toml README.md ./
# (tomllib on Python >= 3.11; a regex on the dependencies list on 3.10, e.g. Ubuntu 22.04 CUDA bases)
RUN python3 -c 'import re, sys; text = open("pyproject.toml").read(); deps = __import__("tomllib").loads(text)["project"]["dependencies"] if sys.version_info >= (3, 11) else re.findall(r"\"([^\"]+)\"", re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)); print("\n".join(d for d in deps if re.match(r"torch(vision)?\b", d)))' > /tmp/torch-requirements.txt \
    && cat /tmp/torch-requirements.txt \
    && pip install --index-url "${TORCH_INDEX_URL}" -r /tmp/torch-requirements.txt \
    && rm /tmp/torch-requirements.txt

# The project, installed like the README's first command.
COPY --chown=10001:10001 . .
# hadolint ignore=DL3013
RUN pip install -e . \
    && python -c "import app, models.inference, wct" \
    && mkdir -p /home/app/.cache && chown -R 10001:10001 /home/app

USER 10001:10001
ENV HOME=/home/app
EXPOSE 7860

# Healthy = the server answers and lists the /stylize API endpoint.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import json, sys, urllib.request; info = json.load(urllib.request.urlopen('http://127.0.0.1:7860/gradio_api/info', timeout=8)); sys.exit(0 if '/stylize' in info.get('named_endpoints', {}) else 1)"]

CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
