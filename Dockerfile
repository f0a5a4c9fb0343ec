# syntax=docker/dockerfile:1
#
# styleserve-server for GPU nodes. Three stages:
#   build   - a virtual environment equal to locks/image-cuda.txt (scripts/lock.py): the CUDA
#             build of torch and onnxruntime-gpu with the NVIDIA wheels both use (one CUDA
#             major), every package pinned and hash-checked, then the project itself, built by
#             the locked setuptools. torch's wheels carry their own CUDA libraries, so the node
#             needs only the NVIDIA driver (mounted by the NVIDIA container toolkit / device
#             plugin; >= 580 for CUDA 13, deploy/README.md) and no nvidia/cuda base image.
#   weights - the VGG16 artifact and the instant tier's feed-forward networks exported at
#             build time when WEIGHTS=baked, else an empty cache that a volume replaces
#             (deploy/k8s/overlays/index-init or overlays/volume).
#   runtime - python:slim with the environment and the cache copied in: no compiler, no pip
#             cache, a non-root user, the server as the exec-form entry point.
# deploy/README.md says when to bake the weights and when to export them in the cluster.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The lock first, in its own layer: it is the largest and changes least often. --no-deps: the
# lock is the whole environment, nothing is resolved here.
COPY locks/image-cuda.txt ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r image-cuda.txt
COPY pyproject.toml README.md ./
COPY client/ client/
COPY server/ server/
COPY model_export/ model_export/
# Non-editable: the runtime stage copies /opt/venv alone. The compiled bytecode stays: the
# root filesystem is read-only in the cluster, and torch's import would recompile every start.
RUN pip install --no-cache-dir --no-deps --no-build-isolation .

FROM build AS weights
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

FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
LABEL org.opencontainers.image.title="styleserve" \
      org.opencontainers.image.description="Gatys-style neural style transfer as a streaming gRPC service" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid "${UID}" styleserve \
    && useradd --system --uid "${UID}" --gid "${UID}" --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin styleserve
COPY --from=build /opt/venv /opt/venv
COPY --from=weights /opt/styleserve/weights /opt/styleserve/weights
# NVIDIA_* tell the NVIDIA container toolkit to expose the GPUs and driver libraries to a
# non-CUDA base image (`docker run --gpus all`); Kubernetes' device plugin sets them per pod.
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
    STYLESERVE_METRICS_PORT=9090 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER ${UID}:${UID}
WORKDIR /tmp
EXPOSE 50051 9090
ENTRYPOINT ["styleserve-server"]
