# The Skewless image: the CLI, the training code and the predictor. Settings come from the
# environment (SKEWLESS_*), as everywhere else; the image is production unless told otherwise,
# so /admin takes named tokens only (`skewless tokens create`), never the shared one.
FROM python:3.11-slim
WORKDIR /app
ENV FEAST_USAGE=False PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SKEWLESS_ENVIRONMENT=production
# The locked runtime versions (no dev tools), each wheel checked against the lock's hashes; a
# layer of its own, rebuilt only when the lock changes.
COPY requirements-runtime.lock requirements-spark.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements-runtime.lock
# The cluster profile's Spark (docker compose builds it with SPARK=true): Java 17 and the
# Spark extra's lock, the same versions plus pyspark, whose scripts also run the Spark master
# and workers (they need Feast too: the compute engine's Python runs on them).
ARG SPARK=false
RUN if [ "$SPARK" = "true" ]; then \
      apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
      && rm -rf /var/lib/apt/lists/* \
      && pip install --no-cache-dir --require-hashes -r requirements-spark.lock; \
    fi
COPY pyproject.toml README.md alembic.ini ./
COPY skewless skewless
COPY training training
COPY service service
COPY feature_repo feature_repo
# Editable, so the default paths (feature_repo/, var/) resolve under /app; its dependencies are
# the locked ones above. Compiled here, since the code is not writable at run time.
RUN pip install --no-cache-dir --no-deps -e . \
    && python -m compileall -q skewless training service feature_repo
# An unprivileged user owns only what the service writes: var/ (models, logs, spool, reports)
# and feature_repo/data/ (generated tables, Feast's registry). Named volumes mounted there
# start out with this ownership.
RUN useradd --system --uid 10001 --user-group --create-home skewless \
    && mkdir -p var feature_repo/data \
    && chown -R skewless:skewless var feature_repo/data
USER skewless:skewless
EXPOSE 8000
CMD ["skewless", "serve", "--host", "0.0.0.0", "--port", "8000"]
