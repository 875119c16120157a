"""Celery settings, read from the environment through ``worker.settings`` (see docs/operations.md).

Each reliability setting carries the one-line reason it is set the way it is.
"""

from worker.settings import ConfigurationError, get_settings

try:
    _settings = get_settings()
except ConfigurationError as exc:
    # Plain `celery` commands would otherwise bury the variable at fault under a traceback.
    raise SystemExit(f"datasync configuration error: {exc}") from exc

broker_url = _settings.broker_url or "redis://127.0.0.1:6379/0"
result_backend = _settings.result_backend or broker_url
broker_connection_retry_on_startup = True

# JSON only: no pickle means a message on the broker can never execute code in a worker.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

# Acknowledge a sync only when it has finished, so a worker that dies mid-sync hands it back...
task_acks_late = True
# ...including when the worker process is killed outright (OOM, kill -9), not only on exceptions.
task_reject_on_worker_lost = True
# One message at a time per process: a slow NHS page must not hold other datasets hostage.
worker_prefetch_multiplier = 1
# Soft limit raises inside the task so it can record its run; the hard limit kills a hung process.
task_soft_time_limit = _settings.task_soft_time_limit
task_time_limit = _settings.task_time_limit
# Recycle processes now and then: CPython rarely returns freed memory to the OS.
worker_max_tasks_per_child = _settings.max_tasks_per_child
worker_concurrency = _settings.worker_concurrency
# Redis re-delivers unacknowledged messages after this long; it must exceed the longest retry
# countdown plus the hard time limit, or a waiting task would be delivered twice. The restore sweep
# runs every few seconds (kombu's default is ~100 s) so a task lost with a whole worker comes back
# soon after the timeout, not minutes later.
broker_transport_options = {
    "visibility_timeout": _settings.visibility_timeout,
    "unacked_restore_interval": max(1, min(10, _settings.visibility_timeout // 4)),
    "unacked_restore_throttle": 1,
}
result_backend_transport_options = {"visibility_timeout": _settings.visibility_timeout}
result_expires = 24 * 3600
task_track_started = True
task_default_queue = "datasync"
worker_send_task_events = True
task_send_sent_event = True

# The sync schedule is one beat entry: a cheap scan that enqueues whatever is due. Per-dataset frequency
# lives in the catalogue and the store, never in beat, so beat holds nothing worth losing.
beat_schedule = {
    # A scan nobody picked up before the next one is worthless: let it expire instead of piling up.
    "sync-due": {
        "task": "datasync.sync_due",
        "schedule": _settings.beat_interval_seconds,
        "options": {"expires": _settings.beat_interval_seconds},
    },
    # sync_runs grows by every attempt; trim it daily (RedBeat remembers the last run across restarts).
    "prune-runs": {"task": "datasync.prune_runs", "schedule": 24 * 3600, "options": {"expires": 3600}},
}
# Publishing new versions to the national data catalogue is opt-in; unchanged datasets cost no request.
if _settings.publish_auto and _settings.publish_url:
    beat_schedule["publish-new-versions"] = {
        "task": "datasync.publish_new_versions",
        "schedule": _settings.beat_interval_seconds,
        "options": {"expires": _settings.beat_interval_seconds},
    }
# RedBeat keeps the schedule in Redis behind a lock, so a second beat started by mistake waits
# instead of doubling every run; the lock outlives a few beat loops but not a long outage.
beat_scheduler = "redbeat.RedBeatScheduler"
redbeat_redis_url = broker_url
redbeat_redis_options: dict[str, object] = {}
beat_max_loop_interval = 5
redbeat_lock_timeout = 30
