# syntax=docker/dockerfile:1
#
# styleserve-server, two images from one file (deploy/README.md, "Container image"):
#   cuda - GPU nodes, the default (the last stage: `docker build .`): torch's CUDA build and
#          onnxruntime-gpu with the NVIDIA wheels both use (locks/image-cuda.txt, one CUDA
#          major). torch's wheels carry their own CUDA libraries, so the node needs only the
#          NVIDIA driver (mounted by the NVIDIA container toolkit / device plugin; >= 580 for
#          CUDA 13, deploy/README.md) and no nvidia/cuda base image.
#   cpu  - CPU nodes (`docker build --target cpu .`), where the instant tier runs well: torch's
#          CPU build (locks/image-cpu.txt), no NVIDIA wheels, a fraction of the size.
# Stages:
#   build      - python:slim with an empty virtual environment.
#   cpu-build  - the environment made equal to locks/image-cpu.txt (scripts/lock.py), every
#                package pinned and hash-checked, then the project as a wheel built by the
#                locked setuptools, installed.
#   weights    - the VGG16 artifact and the instant tier's feed-forward networks exported at
#                build time when WEIGHTS=baked, else an empty cache that a volume replaces
#                (deploy/k8s/overlays/index-init or overlays/volume). The export runs on the CPU
#                in either build (a build has no GPU), so it runs once, in the smaller
#                environment, and both images carry the same files.
#   cuda-build - the environment made equal to locks/image-cuda.txt, then the same wheel.
#   runtime    - what both images share: python:slim, a non-root user, the weights, the
#                settings, the health check and the exec-form entry point; no compiler, no
#                pip cache. Not an image of its own: it has no environment yet.
#   cpu, cuda  - runtime with its environment copied in.
# deploy/README.md says when to bake the weights and when to export them in the cluster.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

FROM build AS cpu-build
# torch's CPU build (torch==X+cpu) is on PyTorch's CPU index only: scripts/lock.py's
# PYTORCH_CPU_INDEX, or a mirror of it (--build-arg TORCH_CPU_INDEX=...). Searched beside the
# default index, which is safe: every file must match one of the lock's hashes, whichever
# index serves it.
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# The lock first, in its own layer: it is the largest and changes least often. --no-deps: the
# lock is the whole environment, nothing is resolved here.
COPY locks/image-cpu.txt ./
RUN pip install --no-cache-dir --require-hashes --no-deps \
      --extra-index-url "$TORCH_CPU_INDEX" -r image-cpu.txt
COPY pyproject.toml README.md LICENSE ./
COPY client/ client/
COPY server/ server/
COPY model_export/ model_export/
# A wheel, so that cuda-build installs exactly this build of the project. Non-editable: the
# runtime copies /opt/venv alone. The compiled bytecode stays: the root filesystem is
# read-only in the cluster, and torch's import would recompile every start.
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist . \
    && pip install --no-cache-dir --no-deps /dist/styleserve-*.whl

FROM cpu-build AS weights
# baked: the weights are in the image (no network at pod start, larger image, one image per
# weight source). volume: the image carries no weights; init containers export them into a
# cache volume, or a volume holding them is mounted.
ARG WEIGHTS=baked
ARG WEIGHTS_SOURCE=keras-vgg16
ARG FEED_FORWARD_SOURCE=magenta-arbitrary
ENV STYLESERVE_CACHE_DIR=/opt/styleserve/weights
RUN mkdir -p "$STYLESERVE_CACHE_DIR" \
    && if [ "$WEIGHTS" = "baked" ]; then \
         styleserve-export --source "$WEIGHTS_SOURCE" --cache-dir "$STYLESERVE_CACHE_DIR" \
         && styleserve-export --source "$FEED_FORWARD_SOURCE" --cache-dir "$STYLESERVE_CACHE_DIR"; \
       elif [ "$WEIGHTS" != "volume" ]; then \
         echo "WEIGHTS must be 'baked' or 'volume', got '$WEIGHTS'" >&2; exit 1; \
       fi

FROM build AS cuda-build
COPY locks/image-cuda.txt ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r image-cuda.txt
COPY --from=cpu-build /dist/ /dist/
RUN pip install --no-cache-dir --no-deps /dist/styleserve-*.whl

FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
LABEL org.opencontainers.image.title="styleserve" \
      org.opencontainers.image.description="Gatys-style neural style transfer as a streaming gRPC service" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid "${UID}" styleserve \
    && useradd --system --uid "${UID}" --gid "${UID}" --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin styleserve
COPY --from=weights /opt/styleserve/weights /opt/styleserve/weights
# No bytecode writes: the root filesystem is read-only in the cluster. HOME=/tmp: the only
# writable place there, for libraries that cache under the home directory. The server listens
# on every interface (its default is loopback only) and serves metrics.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    STYLESERVE_CACHE_DIR=/opt/styleserve/weights \
    STYLESERVE_HOST=0.0.0.0 \
    STYLESERVE_METRICS_PORT=9090
USER ${UID}:${UID}
WORKDIR /tmp
EXPOSE 50051 9090
# For docker run and Compose (kubelet ignores it: the Deployment has gRPC probes). The CLI
# asks grpc.health.v1 at $STYLESERVE_SERVER, else 127.0.0.1:50051, and exits 0 only when
# SERVING; the start period covers loading and warming up, as the startup probe's 5 minutes
# do. With TLS on the gRPC port, run the container with STYLESERVE_SERVER=127.0.0.1:50052, the
# plaintext health-only port (STYLESERVE_HEALTH_PORT); likewise after moving STYLESERVE_PORT.
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --start-interval=5s --retries=3 \
    CMD ["styleserve", "health", "--timeout", "5"]
ENTRYPOINT ["styleserve-server"]

FROM runtime AS cpu
COPY --from=cpu-build /opt/venv /opt/venv

# Last, so that `docker build .` builds it, as before there was a CPU image.
FROM runtime AS cuda
COPY --from=cuda-build /opt/venv /opt/venv
# NVIDIA_* tell the NVIDIA container toolkit to expose the GPUs and driver libraries to a
# non-CUDA base image (`docker run --gpus all`); Kubernetes' device plugin sets them per pod.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
