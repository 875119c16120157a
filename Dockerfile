# datasync worker image: one image for every role (migrate, worker, beat, flower); the command
# picks the role. Build from the repository root:  docker build -t datasync .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app

# Flower is only the monitoring UI (compose service "flower"), not a runtime dependency of the
# package, so it is installed next to it rather than listed in pyproject.toml.
RUN pip install . \
    && pip install "flower>=2.0,<3"

# The installed package lives in site-packages, so point the worker at the shipped catalogue.
ENV DATASYNC_CATALOGUE=/app/catalogue.toml

RUN useradd --create-home --uid 10001 datasync
USER datasync

CMD ["datasync", "--help"]
