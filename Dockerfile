# PipeScope: the dashboard and its worker processes in one container.

# Builder: compiles the C record writer (pipecore._fastring) and installs the package
# into a virtual environment; the compiler stays in this stage.
FROM python:3.12-slim AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Python.h ships with the python image under /usr/local/include; a base image whose
# Python is Debian's needs python3-dev for it (Debian's headers would not match the
# image's own Python, so they are added only when the image has none).
RUN packages="gcc libc6-dev zlib1g-dev" \
 && if ! python -c 'import os, sys, sysconfig; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then \
      packages="$packages python3-dev"; \
    fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends $packages \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/pipescope
COPY pyproject.toml README.md ./
COPY pipecore ./pipecore
COPY app ./app
# The extension is optional in pyproject.toml, so pip succeeds without it (and hides
# the compiler's output): here a failed C build fails the image build, and the build is
# run again verbosely to show why. The package's bytecode is compiled here because the
# runtime does not write it (PYTHONDONTWRITEBYTECODE): otherwise every run's processes
# would compile pipecore from source as they start.
RUN python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --no-cache-dir -e . \
 && if ! /opt/venv/bin/python -c "import pipecore._fastring"; then \
      echo "pipecore._fastring (the C record writer) did not build; the build again, verbosely:" >&2; \
      pip --python /opt/venv/bin/python install -v --no-deps --force-reinstall -e . >&2; \
      exit 1; \
    fi \
 && python -m compileall -q --invalidation-mode unchecked-hash pipecore app

# Runtime: the same base without a compiler; zlib's runtime library (libz.so.1) is
# part of the base image.
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    PIPESCOPE_HOST=0.0.0.0 \
    PIPESCOPE_PORT=8000 \
    PIPESCOPE_DB=/data/pipescope.sqlite3

# tini reaps orphaned grandchildren of worker processes and forwards signals.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

# The editable install points at /srv/pipescope, so the tree keeps its path here.
WORKDIR /srv/pipescope
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /srv/pipescope ./
COPY templates ./templates
COPY static ./static
RUN python -c "import pipecore._fastring, pipecore.telemetry as t; assert t.WRITER == 'c', f'expected the C record writer (WRITER == \"c\"), got WRITER == {t.WRITER!r}'" \
 && useradd --create-home --uid 10001 pipescope \
 && mkdir -p /data && chown pipescope /data

USER pipescope
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["pipescope", "serve", "--host", "0.0.0.0", "--port", "8000"]
