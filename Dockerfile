# syntax=docker/dockerfile:1
# Dispatchroom: multi-stage build, non-root runtime, `dispatchroom serve` with a health check.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first (pinned, hashes checked), so code changes do not reinstall them.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY app ./app
# The wheel carries the migrations (app/_alembic); hatchling is pinned in pyproject.toml.
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-deps /wheels/*.whl

FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_URL=sqlite+aiosqlite:////data/dispatchroom.db
RUN groupadd --system --gid 10001 dispatchroom \
 && useradd --system --uid 10001 --gid dispatchroom --home-dir /data --shell /usr/sbin/nologin dispatchroom \
 && mkdir -p /data && chown dispatchroom:dispatchroom /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /data
USER dispatchroom:dispatchroom
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
CMD ["dispatchroom", "serve", "--host", "0.0.0.0", "--port", "8000"]
