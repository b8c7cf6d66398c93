# One image for the API and the workers. CPU torch by default; for the GPU worker build with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
FROM python:3.11-slim-bookworm AS base
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends curl g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /app
RUN pip install --index-url ${TORCH_INDEX} torch==2.13.0
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY workers ./workers
COPY models ./models
COPY migrations ./migrations
RUN pip install torch==2.13.0 . && useradd --uid 10001 --create-home gatekeeper && mkdir -p /data && chown gatekeeper /data
USER gatekeeper
# g++ above lets torch.compile build the scorer's fast path; its compiled graphs persist across restarts here.
ENV GATEKEEPER_STORAGE_DIR=/data/storage TORCHINDUCTOR_CACHE_DIR=/data/inductor-cache
EXPOSE 8042
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD curl -fsS http://127.0.0.1:8042/healthz || exit 1
# The prestart step migrates the schema (Alembic only), then serves.
CMD ["sh", "-c", "gatekeeper db upgrade && gatekeeper serve --host 0.0.0.0 --port 8042"]
