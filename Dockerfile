# syntax=docker/dockerfile:1
# logpipe's container image: `logpipe ship` (Kafka -> Elasticsearch) by default, `logpipe tail`
# (files -> Kafka) with `command: ["tail"]`; any other logpipe sub-command works the same way.
# Configured only by LOGPIPE_* environment variables (docs/configuration.md); nothing to mount
# except, for tail, the log files and a volume for its registry.
#
#   docker build -t logpipe .
#   docker run --rm -e LOGPIPE_SHIP_BOOTSTRAP_SERVERS=kafka:9092 -e LOGPIPE_SHIP_TOPICS=logpipe \
#              -e LOGPIPE_ELASTICSEARCH_HOSTS=http://elasticsearch:9200 logpipe

ARG PYTHON_IMAGE=python:3.12-slim

# -- builder: wheels of logpipe (distribution logpipe-kafkalog) and of everything it needs ------
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[ship]'

# -- runtime: the wheels installed offline, no compiler, no pip cache, not root -----------------
FROM ${PYTHON_IMAGE}
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels 'logpipe-kafkalog[ship]' \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/logpipe --create-home logpipe \
 && install -d -o logpipe -g logpipe /var/lib/logpipe/status /var/lib/logpipe/tail /var/lib/logpipe/logs

# Defaults for a container; every one can be overridden with -e / environment:.
# The status files are what HEALTHCHECK reads; the tail registry and dead letters sit in
# /var/lib/logpipe/tail, which compose mounts as a named volume (owned by the logpipe user).
ENV PYTHONUNBUFFERED=1 \
    LOGPIPE_SHIP_STATUS_FILE=/var/lib/logpipe/status/ship.json \
    LOGPIPE_SHIP_STATUS_INTERVAL=10 \
    LOGPIPE_SHIP_DEAD_LETTER={topic}.dlq \
    LOGPIPE_TAIL_STATUS_FILE=/var/lib/logpipe/status/tail.json \
    LOGPIPE_TAIL_STATUS_INTERVAL=10 \
    LOGPIPE_TAIL_REGISTRY=/var/lib/logpipe/tail/registry.json \
    LOGPIPE_TAIL_DEAD_LETTER=/var/lib/logpipe/tail/dead-letter.jsonl \
    LOGPIPE_FILE_PATH=/var/lib/logpipe/logs/logpipe.jsonl

USER logpipe
WORKDIR /var/lib/logpipe

# Healthy while the status file of the running ship/tail is rewritten (its loop turns), the
# process lives, and it has not waited for Kafka / Elasticsearch for over 5 minutes.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["logpipe", "health", "--quiet"]

ENTRYPOINT ["logpipe"]
CMD ["ship"]
