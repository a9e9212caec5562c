# One image, two faces: start.sh runs the Gradio UI (a RunPod pod) or the RunPod serverless worker (MODE / argument).
# Layers go from least to most often changed: system, uv, the trainer env (SimpleTuner, ~7 GB), the app env, the
# project. A code change rebuilds only the last layer; a requirements change only the envs below it.
#
# CUDA 13.0: the trainer env's torch 2.14.1 from PyPI (requirements-trainer.lock) is a CUDA 13.0 build (+cu130) that
# brings its own CUDA and cuDNN libraries; the base image's CUDA matches it, so NVIDIA's container runtime refuses a
# host whose driver is too old (CUDA 13.0 needs driver >= 580) with a clear message, instead of torch failing later.
FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

ARG DEBIAN_FRONTEND=noninteractive
# SimpleTuner's extra for this image. cuda13 matches the locked torch build (the lock already holds its
# nvidia-cudnn-cu13 / nvidia-nccl-cu13) and adds bitsandbytes, deepspeed, nvidia-ml-py and lm-eval; the extra
# "cuda" would pull cu12 cuDNN/NCCL next to torch's cu13 ones. deepspeed installs without its compiled ops (its JIT
# ops would need nvcc, which a runtime image lacks; SimpleTuner uses deepspeed only when a config asks for it).
# `--build-arg TRAINER_EXTRA=cpu` builds the CPU env instead.
ARG TRAINER_EXTRA=cuda13

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# python3.12-dev and gcc: triton compiles a small launcher against Python.h the first time a kernel runs.
# Versions unpinned: Ubuntu's archive replaces patch releases, so a pin breaks the build; the base tag fixes the rest.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates python3.12 python3.12-venv python3.12-dev gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

ENV APP_VENV=/opt/venv \
    TRAINER_VENV=/opt/venv-trainer \
    UV_NO_CACHE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never

# The app env first holds uv, pinned as in the Makefile; uv installs both envs.
RUN python3.12 -m venv "$APP_VENV" \
    && "$APP_VENV/bin/pip" install --no-cache-dir uv==0.13.8

# The trainer env: SimpleTuner and its pinned dependency set (the lock as constraints), plus the CUDA extra.
COPY requirements-trainer.txt requirements-trainer.lock requirements-trainer-cuda.lock /tmp/requirements/
RUN "$APP_VENV/bin/uv" venv -q --python /usr/bin/python3.12 "$TRAINER_VENV" \
    && "$APP_VENV/bin/uv" pip install -q --compile-bytecode --python "$TRAINER_VENV/bin/python" \
        -r /tmp/requirements/requirements-trainer.txt -c /tmp/requirements/requirements-trainer.lock \
        -c /tmp/requirements/requirements-trainer-cuda.lock "simpletuner[${TRAINER_EXTRA}]"

# The app env: the faces' runtime packages (no test tools) at the versions of requirements-app.lock, with the
# tomlkit override (see the Makefile).
COPY requirements.txt requirements-app.lock requirements-overrides.txt /tmp/requirements/
RUN "$APP_VENV/bin/uv" pip install -q --compile-bytecode --python "$APP_VENV/bin/python" \
        -r /tmp/requirements/requirements.txt -c /tmp/requirements/requirements-app.lock \
        --override /tmp/requirements/requirements-overrides.txt

# Runtime defaults. No token here: HF_TOKEN comes from the pod's or endpoint's secrets at run time.
# TRAINER_ONLINE=1: the image downloads base models from the Hub (so no HF_HUB_OFFLINE); telemetry stays off.
ENV DATA_DIR=/workspace/data \
    TRAINER_ONLINE=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1 \
    PYTHONUNBUFFERED=1

# /workspace: DATA_DIR's parent; a pod's volume mounts over it, a serverless worker uses the container disk.
RUN mkdir -p /workspace
# The release's tag (the release workflow passes it), shown by start.sh in the pod's or worker's log. Declared after
# every RUN, so a new version rebuilds none of the layers above.
ARG IMAGE_VERSION=dev
ENV IMAGE_VERSION=${IMAGE_VERSION}
WORKDIR /app
COPY . /app

EXPOSE 7860
# The UI must answer on its port; a worker passes (start.sh records which face it started).
HEALTHCHECK --interval=30s --timeout=15s --start-period=120s --retries=3 CMD ["/app/start.sh", "health"]
ENTRYPOINT ["/app/start.sh"]
