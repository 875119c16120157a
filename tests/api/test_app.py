"""The HTTP API on a real uvicorn server over a real store: shapes, filters, pagination, visibility,
every auth outcome, review actions and re-syncs on a real broker."""

from __future__ import annotations

import json

import pytest
import redis

from tests.api.conftest import FAILING, HELD, NEVER, OK, PRIVATE, SHARED, ApiServer, Deployment
from tests.servers import RedisServer

SEED_LIST_FIELDS = {
    "key", "name", "description", "category", "source_type", "is_custom", "is_global", "parent", "parent_name",
    "organization", "organization_name", "tags", "options_count", "created_at", "updated_at", "last_synced_at",
    "last_scraped", "is_editable", "reference_url",
}  # fmt: skip


def test_dataset_list_has_the_platform_shape_and_a_sync_object(api: ApiServer) -> None:
    body = api.get("/api/datasets/").json()
    assert body["count"] == 4 and body["previous"] is None and body["next"] is None
    by_key = {row["key"]: row for row in body["results"]}
    assert set(by_key) == {OK, FAILING, HELD, SHARED}  # global rows only; never-synced has no row yet
    assert set(by_key[OK]) >= SEED_LIST_FIELDS and "options" not in by_key[OK]
    assert by_key[OK]["options_count"] == 7 and by_key[OK]["sync"]["state"] == "ok"
    assert by_key[FAILING]["sync"]["state"] == "failing"
    assert by_key[FAILING]["sync"]["last_error"]["kind"] and FAILING not in by_key[FAILING]["sync"]["reason"]
    assert by_key[HELD]["sync"]["state"] == "held"
    assert by_key[SHARED]["sync"] is None  # people's rows are not synced, so they have no sync state


def test_filters_search_tags_and_pagination(api: ApiServer) -> None:
    assert {r["key"] for r in api.get("/api/datasets/?category=rcpch").json()["results"]} == {OK, HELD}
    assert [r["key"] for r in api.get("/api/datasets/?tags=curated,regions").json()["results"]] == [SHARED]
    assert api.get("/api/datasets/?tags=curated,nope").json()["count"] == 0
    assert [r["key"] for r in api.get("/api/datasets/?search=ETHNIC").json()["results"]] == [FAILING]
    assert api.get("/api/datasets/?is_global=false").json()["count"] == 0
    first = api.get("/api/datasets/?page_size=3").json()
    assert (first["count"], len(first["results"]), first["previous"]) == (4, 3, None)
    assert first["next"] == f"{api.url}/api/datasets/?page_size=3&page=2"
    second = api.get("/api/datasets/?page_size=3&page=2").json()
    assert len(second["results"]) == 1 and second["next"] is None and "page=1" in second["previous"]
    keys = [r["key"] for r in first["results"] + second["results"]]
    assert len(set(keys)) == 4
    assert api.get("/api/datasets/?page=9").json() == {"detail": "Invalid page."}
    bad = api.get("/api/datasets/?page_size=500")
    assert bad.status_code == 400 and isinstance(bad.json()["detail"], str)


def test_detail_has_options_and_people_rows_stay_invisible(api: ApiServer, deployment: Deployment) -> None:
    detail = api.get(f"/api/datasets/{OK}/").json()
    assert detail["options"]["E40000003"] == "London" and detail["format_pattern"] == "code - description"
    assert "options_count" not in detail and detail["sync"]["state"] == "ok"
    for key in (None, deployment.keys.viewer, deployment.keys.operator):
        response = api.get(f"/api/datasets/{PRIVATE}/", key)
        assert (response.status_code, response.json()) == (404, {"detail": "Not found."})
        assert PRIVATE not in json.dumps(api.get("/api/datasets/", key).json())
        assert api.get(f"/api/datasets/{PRIVATE}/versions/", key).status_code in (401, 404)
    assert api.get(f"/api/datasets/{SHARED}/").json()["options"] == {"A": "Alpha"}
    assert api.get("/api/datasets/nope/").status_code == 404
    tags = api.get("/api/datasets/available-tags/").json()
    assert {"tag": "curated", "count": 1} in tags and "secret" not in json.dumps(tags)
    assert tags == sorted(tags, key=lambda t: (-t["count"], t["tag"]))


def test_every_auth_outcome(api: ApiServer, deployment: Deployment) -> None:
    keys = deployment.keys
    missing = api.get("/api/sync/status")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert missing.json() == {"detail": "Authentication credentials were not provided."}
    for bad in ("dsk_not-a-key", keys.expired, keys.revoked):
        response = api.get("/api/sync/status", bad)
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
        assert response.json() == {"detail": "Invalid, expired or revoked API key."}
    assert api.get("/api/datasets/", "dsk_not-a-key").status_code == 401  # a bad key is never treated as none
    assert api.get("/api/sync/status", headers={"Authorization": "Basic abc"}).status_code == 401
    assert api.get("/api/sync/status", keys.viewer).status_code == 200
    forbidden = api.post(f"/api/sync/{OK}/", keys.viewer)
    assert (forbidden.status_code, forbidden.json()["detail"].endswith("needs an operator key.")) == (403, True)
    assert api.post(f"/api/datasets/{HELD}/accept/", keys.viewer).status_code == 403
    assert api.post(f"/api/sync/{OK}/").status_code == 401
    not_allowed = api.call("DELETE", f"/api/datasets/{OK}/", keys.operator)
    assert not_allowed.status_code == 405 and not_allowed.headers["Allow"] == "GET"
    assert not_allowed.json() == {"detail": "Method Not Allowed"}
    assert api.call("PUT", "/api/health").headers["Allow"] == "GET"
    assert api.get("/api/nothing-here").json() == {"detail": "Not Found"}
    no_broker = api.post(f"/api/sync/{OK}/", keys.operator)
    assert no_broker.status_code == 503 and "DATASYNC_BROKER_URL" in no_broker.json()["detail"]
    assert api.post("/api/sync/nope/", keys.operator).status_code == 404


def test_revocation_takes_effect_on_the_next_request(api: ApiServer, deployment: Deployment) -> None:
    from worker.apikeys import create_key, revoke_key

    key, raw = create_key(deployment.ctx.sessions, "temp", "viewer", None, deployment.clock())
    assert api.get("/api/sync/status", raw).status_code == 200
    revoke_key(deployment.ctx.sessions, key.prefix, deployment.clock())
    assert api.get("/api/sync/status", raw).status_code == 401


def test_throttling_per_key_and_per_ip(deployment: Deployment) -> None:
    with deployment.serve(api_rate_key_per_minute=3, api_rate_anonymous_per_minute=2) as api:
        assert [api.get("/api/sync/status", deployment.keys.viewer).status_code for _ in range(3)] == [200] * 3
        throttled = api.get("/api/sync/status", deployment.keys.viewer)
        assert throttled.status_code == 429 and 1 <= int(throttled.headers["Retry-After"]) <= 60
        assert throttled.json()["detail"].startswith("Request was throttled.")
        assert api.get("/api/sync/status", deployment.keys.operator).status_code == 200  # another key, own budget
        assert [api.get("/api/datasets/").status_code for _ in range(3)] == [200, 200, 429]


def test_docs_and_schema_are_public_and_cors_is_off(api: ApiServer, deployment: Deployment) -> None:
    schema = api.get("/api/schema").json()
    assert {"/api/datasets/", "/api/sync/status", "/api/sync/{key}/", "/metrics"} <= set(schema["paths"])
    assert api.get("/api/docs").status_code == 200 and api.get("/api/redoc").status_code == 200
    origin = {"Origin": "https://evil.example"}
    assert "access-control-allow-origin" not in api.get("/api/datasets/", headers=origin).headers
    with deployment.serve(api_cors_origins="https://survey.example") as open_api:
        allowed = open_api.get("/api/datasets/", headers={"Origin": "https://survey.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://survey.example"


def test_sync_status_lists_what_needs_attention_and_moves_with_time(api: ApiServer, deployment: Deployment) -> None:
    body = api.get("/api/sync/status", deployment.keys.viewer).json()
    assert body["counts"] == {
        "ok": 1, "stale": 0, "failing": 1, "held": 1, "paused": 0, "never_synced": 1, "disabled": 0
    }  # fmt: skip
    attention = {row["key"]: row["sync"] for row in body["datasets"]}
    assert set(attention) == {FAILING, HELD, NEVER}
    assert attention[FAILING]["consecutive_failures"] == 3 and attention[FAILING]["last_error"]["message"]
    assert body["system"]["store"]["status"] == "ok" and body["system"]["broker"]["status"] == "down"
    assert body["system"]["down"] == ["broker", "workers", "scheduler"]
    deployment.clock.shift(hours=24 * 7 * 2 + 1)  # regions sync weekly: stale after two weeks
    later = api.get("/api/sync/status", deployment.keys.viewer).json()
    assert later["counts"]["stale"] == 1 and later["counts"]["ok"] == 0


def test_runs_filters_and_pages(api: ApiServer, deployment: Deployment) -> None:
    key = deployment.keys.viewer
    everything = api.get("/api/sync/runs", key).json()
    assert everything["count"] == 7 and len(everything["results"]) == 7
    failed = api.get(f"/api/sync/runs?dataset={FAILING}&status=failed", key).json()
    assert failed["count"] == 3 and {r["status"] for r in failed["results"]} == {"failed"}
    assert {r["bytes_fetched"] for r in failed["results"]} == {None} and everything["results"][-1]["bytes_fetched"] > 0
    assert api.get("/api/sync/runs?since=1h", key).json()["count"] == 7
    deployment.clock.shift(hours=5)
    assert api.get("/api/sync/runs?since=1h", key).json()["count"] == 0
    paged = api.get("/api/sync/runs?page_size=5&page=2", key).json()
    assert len(paged["results"]) == 2 and paged["next"] is None and paged["previous"]
    assert api.get("/api/sync/runs?status=nope", key).status_code == 400


def test_versions_diff_and_review_of_a_held_change(api: ApiServer, deployment: Deployment) -> None:
    viewer, operator = deployment.keys.viewer, deployment.keys.operator
    assert api.get(f"/api/datasets/{HELD}/versions/").status_code == 401
    versions = api.get(f"/api/datasets/{HELD}/versions/", viewer).json()
    assert versions["count"] == 1 and versions["results"][0]["version"] == 1
    accepted = api.post(f"/api/datasets/{HELD}/accept/", operator).json()
    assert accepted["status"] == "updated" and accepted["version"] == 2
    newest = api.get(f"/api/sync/runs?dataset={HELD}", viewer).json()["results"][0]
    assert (newest["id"], newest["status"], newest["trigger"]) == (accepted["run_id"], "updated", "api")
    diff = api.get(f"/api/datasets/{HELD}/diff/?from=1&to=2", viewer).json()
    assert (diff["from"], diff["to"], diff["added"], diff["removed"]) == (1, 2, 0, 30)
    again = api.post(f"/api/datasets/{HELD}/reject/", operator)
    assert again.status_code == 409 and "no held change" in again.json()["detail"]
    assert api.get(f"/api/datasets/{HELD}/diff/?from=7", viewer).status_code == 404
    assert api.get(f"/api/datasets/{HELD}/", viewer).json()["sync"]["state"] == "ok"


def test_a_rejection_through_the_api_is_recorded_with_trigger_api(api: ApiServer, deployment: Deployment) -> None:
    rejected = api.post(f"/api/datasets/{HELD}/reject/", deployment.keys.operator)
    assert rejected.status_code == 200 and rejected.json() == {"key": HELD, "rejected": True}
    newest = api.get(f"/api/sync/runs?dataset={HELD}", deployment.keys.viewer).json()["results"][0]
    assert (newest["status"], newest["error_kind"], newest["trigger"]) == ("skipped", "rejected", "api")


@pytest.mark.redis
def test_resync_is_queued_on_the_broker_with_trigger_api(deployment: Deployment, redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url())
    client.flushall()
    with deployment.serve(broker_url=redis_server.url()) as api:
        one = api.post(f"/api/sync/{OK}/", deployment.keys.operator, json={"force": True})
        assert one.status_code == 202 and [t["key"] for t in one.json()["tasks"]] == [OK]
        many = api.post("/api/sync/", deployment.keys.operator, json={"category": "nhs_dd"})
        assert sorted(t["key"] for t in many.json()["tasks"]) == [FAILING, NEVER]
        assert api.post("/api/sync/", deployment.keys.operator, json={}).status_code == 400
        queued = [json.loads(message) for message in client.lrange("datasync", 0, -1)]
        assert len(queued) == 3 and {m["headers"]["task"] for m in queued} == {"datasync.sync_dataset"}
        assert all("datasync_sent_at" in m["headers"] for m in queued)
        task_id = one.json()["tasks"][0]["task_id"]
        state = api.get(f"/api/sync/tasks/{task_id}", deployment.keys.viewer).json()
        assert state == {"id": task_id, "state": "PENDING", "result": None}
        health = api.get("/api/health").json()
        assert health["queue_length"] == 3 and health["oldest_queued_seconds"] is not None


def test_keys_never_reach_the_logs(deployment: Deployment, capfd: pytest.CaptureFixture[str]) -> None:
    with deployment.serve(log_level="debug") as api:
        api.get("/api/sync/status", deployment.keys.viewer)
        api.get("/api/sync/status", deployment.keys.revoked)
        api.get("/api/datasets/", "dsk_wrong-key-for-the-log")
    logs = capfd.readouterr()
    text = logs.out + logs.err
    assert "GET /api/sync/status" in text  # the access log was on and captured
    for secret in (deployment.keys.viewer, deployment.keys.revoked, "dsk_wrong-key-for-the-log"):
        assert secret not in text and secret[12:] not in text


def test_catalogue_edits_are_picked_up_and_bad_edits_ignored(deployment: Deployment, tmp_path, caplog) -> None:
    from api.app import create_app
    from tests.api.conftest import ApiServer as Server
    from tests.worker.celery_harness import write_catalogue
    from worker.catalogue import load_catalogue

    path = write_catalogue(tmp_path / "catalogue.toml", [OK])
    with Server(create_app(deployment.settings, load_catalogue(path), deployment.clock)) as api:

        def counts() -> dict[str, int]:
            return api.get("/api/sync/status", deployment.keys.viewer).json()["counts"]

        assert counts()["ok"] == 1 and counts()["never_synced"] == 0 and counts()["disabled"] == 2
        write_catalogue(path, [OK, NEVER])
        assert counts()["never_synced"] == 1
        assert api.post(f"/api/sync/{NEVER}/", deployment.keys.operator).status_code == 503  # known now; no broker
        path.write_text("[[datasets]]\nkey = 1\n")
        assert counts()["never_synced"] == 1
        assert "catalogue edit rejected" in caplog.text
