# The image of the app services in docker-compose.yml (migrate, worker, beat, flower): tracking
# with its PostgreSQL and Redis drivers (RabbitMQ needs none), Flower, and your tracker modules.

# Build a wheel of this checkout (the package and its migrations) without keeping the sources.
FROM python:3.11-slim AS build
COPY . /src
RUN pip wheel --no-deps --no-cache-dir --wheel-dir /wheels /src

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --from=build /wheels /wheels
RUN pip install "$(echo /wheels/tracking-*.whl)[postgres,redis,prometheus]" flower \
    && rm -rf /wheels \
    && useradd --create-home --uid 1000 tracking \
    && mkdir /app \
    && chown tracking:tracking /app

# Your tracker modules: /app is on the import path and is the working folder (celery beat keeps its
# schedule file here). Replace examples/ with your own package and point TRACKING_IMPORTS at it.
COPY --chown=tracking:tracking examples /app/examples
ENV PYTHONPATH=/app
WORKDIR /app
USER tracking

CMD ["celery", "-A", "tracking", "worker", "-P", "threads", "-c", "100", "-l", "info"]
