"""The worker: Celery app and tasks, the sync pipeline, the CLI and the status reports."""
