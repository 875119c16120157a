"""The Celery application (``celery --app worker.celery_app``)."""

from celery import Celery

app = Celery("datasync", include=["worker.tasks", "worker.heartbeat", "worker.webhook_task"])
app.config_from_object("celeryconfig")
