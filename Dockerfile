# batchpipe: one image for every service (ingest, dispatcher, poller, openai-emulator, topics).
# Dependencies are installed in their own layer from pyproject.toml alone, so editing the
# source rebuilds in seconds. Runs as a non-root user; state goes to /data (a volume).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BATCHPIPE_HTTP_HOST=0.0.0.0 \
    BATCHPIPE_LOG_FORMAT=json

WORKDIR /app

# 1. dependencies only (cached until pyproject.toml changes)
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps))" \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# 2. the source, installed without touching the dependencies again
COPY README.md ./
COPY shared ./shared
COPY services ./services
COPY devtools ./devtools
COPY src ./src
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin batchpipe \
    && mkdir -p /data \
    && chown batchpipe:batchpipe /data

USER batchpipe
WORKDIR /data
ENTRYPOINT ["batchpipe"]
CMD ["--help"]
