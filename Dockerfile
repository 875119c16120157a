# datasync image: one image for every role (migrate, worker, beat, flower); the command picks the role.
# Build from the repository root:  docker build -t datasync .
#
# Health checks are per role, so they live in docker-compose.yml (`datasync healthcheck worker|beat`),
# not here: a HEALTHCHECK in the image would also judge the one-shot migrate and flower containers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Dependencies first, from the lock file alone (pinned, hash-checked, Flower included): this layer
# is rebuilt only when requirements.lock changes, not on every code edit.
COPY requirements.lock /opt/requirements.lock
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --require-hashes -r /opt/requirements.lock

# Then the code (.dockerignore keeps .venv, stores, Redis state, caches and tests out), installed
# without resolving anything again.
COPY . /app
RUN pip install --no-cache-dir --no-deps /app

# The installed package lives in site-packages, so point the worker at the shipped catalogue.
ENV DATASYNC_CATALOGUE=/app/catalogue.toml

# A non-root user; its home is the working directory, the only place it can write (`datasync run`
# keeps its SQLite store and embedded Redis state there). The code stays root-owned, read-only.
RUN useradd --create-home --home-dir /var/lib/datasync --uid 10001 --user-group datasync
WORKDIR /var/lib/datasync
USER 10001:10001

CMD ["datasync", "--help"]
