# Two images from one file (docker-compose.yml builds both):
#   --target api         the API: CPU torch 2.13.0 (torch==2.13.0+cpu from the PyTorch CPU index)
#   --target worker-gpu  the Celery workers: torch==2.13.0 from PyPI, whose manylinux x86_64 wheel is the
#                        CUDA 13.0 build (it requires cuda-toolkit 13.0.3 and nvidia-cudnn-cu13 9.20 from PyPI;
#                        the host needs an NVIDIA driver for CUDA 13, 580 or newer, and the NVIDIA Container
#                        Toolkit). There is no cu124 build of 2.13.0 to take instead.
# Both run as the unprivileged user gatekeeper (uid 10001), which owns /data (storage, models, caches).
FROM python:3.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --create-home gatekeeper \
    && mkdir -p /data/storage /data/models /data/cache /data/cases \
    && chown -R gatekeeper:gatekeeper /data
# Named volumes mounted on these folders start with this ownership, so the container user can write them.
ENV GATEKEEPER_STORAGE_DIR=/data/storage GATEKEEPER_MODELS_DIR=/data/models GATEKEEPER_DATA_DIR=/data/cases \
    TORCHINDUCTOR_CACHE_DIR=/data/cache/inductor MPLCONFIGDIR=/data/cache/matplotlib
WORKDIR /home/gatekeeper

# The wheel carries the migrations and alembic.ini (package data): `gatekeeper db upgrade` needs no checkout.
FROM base AS wheel
COPY pyproject.toml README.md /src/
COPY app /src/app
COPY workers /src/workers
COPY models /src/models
COPY migrations /src/migrations
RUN pip wheel --no-deps --wheel-dir /wheels /src

# The OHIF viewer for /viewer/: the pinned @ohif/app from npm, checked and rebased by the project's own script.
FROM base AS ohif
RUN apt-get update && apt-get install -y --no-install-recommends npm && rm -rf /var/lib/apt/lists/*
COPY scripts/install-ohif.sh scripts/rebase_ohif.py /src/scripts/
RUN cd /src && GATEKEEPER_OHIF_DIR=/opt/ohif bash scripts/install-ohif.sh

FROM base AS api
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY --from=ohif /opt/ohif /opt/ohif
ENV GATEKEEPER_OHIF_DIR=/opt/ohif
COPY --from=wheel /wheels /wheels
# torch==2.13.0 again: the CPU build installed above satisfies it, so pip never resolves a CUDA torch here.
RUN pip install torch==2.13.0 /wheels/*.whl && rm -rf /wheels
USER gatekeeper
EXPOSE 8042
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=5 \
    CMD curl -fsS http://127.0.0.1:8042/healthz || exit 1
# Migrate (Alembic only; the migrations are inside the installed package), then serve.
CMD ["sh", "-c", "gatekeeper db upgrade && exec gatekeeper serve --host 0.0.0.0 --port 8042"]

FROM base AS worker-gpu
# A C compiler: Triton builds its launcher with one, and torch.compile's CPU path (GATEKEEPER_SCORER_ENGINE=compiled).
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
RUN pip install torch==2.13.0
COPY --from=wheel /wheels /wheels
RUN pip install torch==2.13.0 /wheels/*.whl && rm -rf /wheels
USER gatekeeper
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD celery -A workers.celery_app inspect ping -d "celery@$HOSTNAME" --timeout 10 || exit 1
# The scoring queue only; docker-compose.yml runs a second container of this image with --queues training.
CMD ["gatekeeper", "worker", "--queues", "scoring", "--concurrency", "1"]
