"""The HTTP status API, Prometheus metrics and status page: thin FastAPI routes over plain functions."""
