"""What the issue's "done" means, with every process real: an operator with only an API key re-syncs
a dataset over HTTP, a worker runs it, the API reports the outcome, and a webhook announces the change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from api.app import create_app
from models.types import utcnow
from tests.api.conftest import ApiServer
from tests.receiver import SECRET, Receiver, verify
from tests.servers import RedisServer
from tests.upstream import Upstream
from tests.worker.celery_harness import CeleryProcesses, wait_until, write_catalogue
from worker.apikeys import create_key
from worker.catalogue import load_catalogue
from worker.context import SyncContext

pytestmark = [pytest.mark.slow, pytest.mark.redis]
KEY = "nhs_england_regions"


def test_operator_resyncs_over_http_and_a_worker_delivers_the_webhook(
    ctx: SyncContext, redis_server: RedisServer, upstream: Upstream, tmp_path: Path
) -> None:
    redis.Redis.from_url(redis_server.url()).flushall()
    catalogue_path = write_catalogue(tmp_path / "catalogue.toml", [KEY])
    receiver = Receiver(fail_first=1)
    env = {
        "DATASYNC_DATABASE_URL": ctx.settings.database_url,
        "DATASYNC_BROKER_URL": redis_server.url(),
        "DATASYNC_CATALOGUE": str(catalogue_path),
        "DATASYNC_URL_REWRITES": upstream.rewrites(),
        "DATASYNC_WEBHOOK_URLS": receiver.url,
        "DATASYNC_WEBHOOK_SECRET": SECRET,
        "DATASYNC_WEBHOOK_BACKOFF_SECONDS": "0.2",
    }
    processes = CeleryProcesses(env, tmp_path)
    settings = ctx.settings.model_copy(
        update={"broker_url": redis_server.url(), "webhook_urls": receiver.url, "webhook_secret": SecretStr(SECRET)}
    )
    _, operator = create_key(ctx.sessions, "on-call", "operator", None, utcnow())
    try:
        processes.worker("w1", concurrency=1)
        with ApiServer(create_app(settings, load_catalogue(catalogue_path))) as api:
            queued = api.post(f"/api/sync/{KEY}/", operator)
            assert queued.status_code == 202
            task_id = queued.json()["tasks"][0]["task_id"]
            done = wait_until(
                lambda: (t := api.get(f"/api/sync/tasks/{task_id}", operator).json())["state"] == "SUCCESS" and t,
                90,
                "the re-sync to finish on the worker",
                processes,
            )
            assert done["result"]["status"] == "created" and done["result"]["key"] == KEY
            assert api.get(f"/api/datasets/{KEY}/").json()["sync"]["state"] == "ok"
            runs = api.get(f"/api/sync/runs?dataset={KEY}", operator).json()["results"]
            assert [(r["status"], r["trigger"]) for r in runs] == [("created", "api")]
            event = receiver.wait_for(1, timeout=60)[0]
            assert (event["type"], event["dataset"], event["changes"]["added"]) == ("list_changed", KEY, 7)
            assert [a["status"] for a in receiver.attempts] == [500, 200]  # retried by the Celery task
            assert all(verify(attempt) for attempt in receiver.attempts)
            assert json.loads(receiver.attempts[0]["body"])["id"] == event["id"]
    finally:
        processes.stop()
        receiver.close()
