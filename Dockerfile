# PipeScope: the dashboard and its worker processes in one container.
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIPESCOPE_HOST=0.0.0.0 \
    PIPESCOPE_PORT=8000 \
    PIPESCOPE_DB=/data/pipescope.sqlite3

# tini reaps orphaned grandchildren of worker processes and forwards signals.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/pipescope
COPY pyproject.toml README.md ./
COPY pipecore ./pipecore
COPY app ./app
COPY templates ./templates
COPY static ./static
RUN pip install --no-cache-dir -e . \
 && useradd --create-home --uid 10001 pipescope \
 && mkdir -p /data && chown pipescope /data

USER pipescope
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["pipescope", "serve", "--host", "0.0.0.0", "--port", "8000"]
