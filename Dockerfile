# syntax=docker/dockerfile:1
# memoryd: one node, HTTP API and /ws on port 8080.
#
#   docker build -t memoryd .
#   docker run -p 8080:8080 -v memoryd-data:/data memoryd   # a single node, embedded PostgreSQL
#   docker run -e DATABASE_URL=... -e REDIS_URL=... ... memoryd   # a node of a cluster
#
# Deployments: deploy/docker-compose.yml, deploy/k8s/ and docs/operations.md.

# -- build: memoryd and its runtime dependencies into a virtualenv -------------------------
FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Every dependency ships binary wheels for linux/amd64 and linux/arm64, so no compiler
# is needed; the venv is copied whole into the runtime image.
RUN python -m venv /opt/memoryd

WORKDIR /src
COPY pyproject.toml README.md ./
COPY memoryd ./memoryd
# Not editable, no extras: only memoryd's runtime dependencies, no test or lint tools.
RUN /opt/memoryd/bin/pip install --no-cache-dir . \
    && /opt/memoryd/bin/memoryd version

# -- runtime ------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="memoryd" \
      org.opencontainers.image.description="Real-time messaging backend of the Memory App" \
      org.opencontainers.image.licenses="MIT"

# A fixed, non-root uid/gid (Kubernetes' runAsUser/fsGroup use the same numbers). It must
# exist in /etc/passwd: the embedded PostgreSQL's initdb looks its name up.
# ffmpeg decodes voice notes for transcription (browser WebM/Opus, WhatsApp Ogg/Opus).
# Not pinned: bookworm's point releases replace the version (a pin would stop the build);
# the base image's tag fixes the distribution.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 memoryd \
    && useradd --system --uid 10001 --gid memoryd --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin memoryd \
    && mkdir -p /data \
    && chown memoryd:memoryd /data

COPY --from=build /opt/memoryd /opt/memoryd

ENV PATH=/opt/memoryd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MEMORYD_DATA_DIR=/data

# The data dir: the embedded PostgreSQL (when DATABASE_URL is unset), generated keys
# (when MEMORYD_JWT_PRIVATE_KEY_FILE / MEMORYD_SECRET_KEY are unset), WhatsApp media.
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001

EXPOSE 8080

# memoryd drains on SIGTERM (sockets close with 1012, clients resume on another node) and
# exits within about 1.5 x MEMORYD_SHUTDOWN_TIMEOUT (10 s): give the orchestrator a longer
# grace period (docker stop -t, stop_grace_period, terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM

# No curl in the slim image: the standard library asks /health (503 -> exit 1). The first
# start may initialise the embedded PostgreSQL and apply migrations: a long start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]

# exec form: memoryd is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["memoryd"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
