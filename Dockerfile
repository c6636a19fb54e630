# syntax=docker/dockerfile:1
# pykbroker: a Kafka broker in Python, in a container.
#
#   docker build -t pykbroker .
#   docker run -p 9092:9092 -p 9404:9404 -v pykbroker-data:/var/lib/pykbroker pykbroker
#
# Configure with KAFKA_* environment variables (KAFKA_ADVERTISED_LISTENERS, KAFKA_NUM_PARTITIONS,
# ...), a server.properties mounted at /etc/pykbroker/server.properties, or both.

ARG PYTHON_VERSION=3.12
# The image both stages start from. Another one with Python at /usr/local/bin/python works too: a
# mirror's copy, or the Debian stand-in the tests build where no registry is reachable.
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim-bookworm

# --- build: wheels of pykbroker and its runtime dependencies (no test or dev extras) -------------
FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY pykbroker ./pykbroker
COPY config ./config
COPY docker/server.properties ./docker/server.properties
# The wheels, and the image's configuration: the shipped config/server.properties, then the
# container's own settings (listeners, data in the volume, metrics), which come later and so win.
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
    && cat config/server.properties docker/server.properties > /server.properties

# --- runtime -------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    XDG_DATA_HOME=/var/lib \
    PYKBROKER_CONFIG=/etc/pykbroker/server.properties

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/pykbroker-*.whl \
    && groupadd --system --gid 1000 pykbroker \
    && useradd --system --uid 1000 --gid pykbroker --home-dir /var/lib/pykbroker \
        --shell /usr/sbin/nologin pykbroker \
    && mkdir -p /var/lib/pykbroker/data \
    && chown -R pykbroker:pykbroker /var/lib/pykbroker

COPY --from=build /server.properties /etc/pykbroker/server.properties
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/docker-entrypoint.sh

# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
WORKDIR /var/lib/pykbroker
VOLUME ["/var/lib/pykbroker"]

# 9092: Kafka clients; 9404: Prometheus /metrics (metrics.port in server.properties).
EXPOSE 9092 9404

# A real ApiVersions round trip to the broker's first listener.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["docker-entrypoint.sh", "healthcheck"]

# Exec form all the way down (the entrypoint execs pykbroker): the broker is PID 1 and gets
# `docker stop`'s SIGTERM, on which it flushes and writes its clean-shutdown marker.
STOPSIGNAL SIGTERM
ENTRYPOINT ["docker-entrypoint.sh"]
CMD []
